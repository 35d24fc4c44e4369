"""``forecast predict``: the next ``horizon`` samples after the end of a run, as a region time-series TSV.

The run is prepared as the model was trained (resampled to its TR, normalised); the last ``context`` samples are
forecast, brought back to the run's units (the normalisation inverted with the run's own statistics) and to the
run's TR (linear interpolation of the forecast from the last model sample), so the file continues the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm_cli.data.corpus import check_regions, expected_regions
from brainfm_cli.data.preprocess import Preprocessor
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.files import atomic_group, json_text, sidecar_path, tsv_text
from brainfm_cli.io.provenance import generated_by
from brainfm_cli.io.timeseries import read_timeseries
from brainfm_cli.tasks.forecast.evaluate import read_run


@dataclass(frozen=True)
class PredictOptions:
    device: str = "auto"
    tr: float | None = None
    missing: str = "error"


def continue_at(forecast: np.ndarray, last: np.ndarray, tr_model: float, tr_out: float) -> np.ndarray:
    """``[R, H]`` forecast every ``tr_model`` s after a last sample ``last [R]`` → ``[R, K]`` samples every
    ``tr_out`` s over the same span (linear interpolation; K = ⌊H·tr_model / tr_out⌋, at least 1)."""
    H = forecast.shape[1]
    known_t = np.arange(H + 1) * tr_model
    values = np.concatenate([last[:, None], forecast], axis=1)
    K = max(1, int(np.floor(H * tr_model / tr_out + 1e-9)))
    want = np.arange(1, K + 1) * tr_out
    return np.stack([np.interp(want, known_t, v) for v in values])


def predict(run: str | Path, input_tsv: str | Path, output: str | Path, opts: PredictOptions) -> pd.DataFrame:
    """Forecast the samples that follow ``input_tsv``; write a TSV (``-``: standard output) and its sidecar."""
    import torch

    from brainfm_cli.models import load

    card_path, _cfg = read_run(run)
    model = load(card_path, device=opts.device)
    card = model.card
    C, H = int(card.forecast["context"]), int(card.forecast["horizon"])
    ts = read_timeseries(input_tsv, tr=opts.tr)
    data = check_regions(ts, card, expected_regions(card), input_tsv)
    tr_in = ts.tr if ts.tr is not None else opts.tr
    prep = Preprocessor.from_space(card.input, missing=opts.missing)
    x, missing, (centre, scale) = prep.prepare_with_stats(data.to_numpy(), tr_in, input_tsv, list(data.columns))
    if x.shape[1] < C:
        raise BrainfmError(f"the run has {x.shape[1]} samples at the model's TR {card.input.tr} s; the forecaster "
                           f"needs a context of {C}", path=input_tsv, fix="give a longer run")
    absent = torch.zeros(1, x.shape[0], dtype=torch.bool)
    absent[0, missing] = opts.missing == "mask"
    device = next(model.parameters()).device
    with torch.inference_mode():
        future = model.forecast(torch.from_numpy(x[None, :, -C:]).to(device),
                                absent.to(device) if absent.any() else None)[0].float().cpu().numpy()
    future = future * scale[:, None] + centre[:, None]
    last = x[:, -1] * scale + centre
    values = continue_at(future, last, card.input.tr, tr_in).T
    values[:, missing] = np.nan
    table = pd.DataFrame(values, columns=list(data.columns))
    sidecar = {
        "Description": f"forecast of the {values.shape[0]} samples after the end of the input run, by {card.name} "
                       f"({H} samples at its TR {card.input.tr:g} s, brought back to the run's units and TR)",
        "RepetitionTime": tr_in, "SamplingFrequency": 1.0 / tr_in, "Source": str(input_tsv), "Model": card.name,
        "Run": str(run), "WeightsSHA256": model.weights_info.get("sha256"), "Context": C, "Horizon": H,
        "ModelRepetitionTime": card.input.tr, "RegionsWithoutData": [data.columns[i] for i in missing],
        "Preprocessing": prep.describe(), "GeneratedBy": generated_by("forecast predict"),
    }
    if str(output) == "-":
        import sys

        sys.stdout.write(tsv_text(table))
        sys.stdout.flush()
        return table
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_group([out, sidecar_path(out)]) as (tsv, js):
        tsv.write_text(tsv_text(table), encoding="utf-8")
        js.write_text(json_text(sidecar), encoding="utf-8")
    return table
