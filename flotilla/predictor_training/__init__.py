"""Training and judging the router's output-length predictor, out of the serving package: loading
the CASTILLO prompts, fine-tuning the encoder (torch), sweeping variants into artifacts, offline
evaluation and its report, and `flotilla predictor train|eval|refit`. What serving needs (the
encoder, heads, calibration, online refits, artifacts) stays in `flotilla.router.predictor`."""
