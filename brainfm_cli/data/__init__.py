"""What is computed from runs before any model: region and voxel extraction, denoising, model-ready
preprocessing, corpora, connectivity and functional gradients."""
