"""NAB (Numenta Anomaly Benchmark): run the detectors over NAB files and score the results."""
