"""The ``forecast`` task: predicting the next samples of region time series from a context, beside baselines."""
