"""flotilla.router.predictor: a learned output-length predictor for the router's scheduling.

What the router uses (everything numpy + tokenizers; torch only trains):

- `LearnedPredictor.load("llama-3.1-8b")`: a shipped, versioned artifact (fine-tuned truncated
  MiniLM, int8, with a linear ranking head and calibrated p50/p90), chosen per fleet by name.
- `BatchingPredictor`: `await bp.predict(PredictorInput(text, prompt_tokens, max_tokens))` from
  the event loop; micro-batches in one worker thread. Returns `Predicted(prediction, features)`.
- `FeatureLog` + `refit`: record (features, real output tokens) per model; a refit head replaces
  the current one only if its tau on the most recent traffic is not worse; `OnlineRefitter` runs
  that periodically in the router and swaps accepted heads into the BatchingPredictor.

Heavy modules (`finetune`, `sweep`) are not imported here.
"""

from flotilla.router.predictor.batching import BatchingParams, BatchingPredictor, Predicted
from flotilla.router.predictor.feature_log import FeatureLog, LogSnapshot
from flotilla.router.predictor.online import OnlineRefitter
from flotilla.router.predictor.predictor import (
    LearnedPredictor,
    Prediction,
    Predictor,
    PromptLengthPredictor,
)
from flotilla.router.predictor.refit import RefitOutcome, RefitParams, refit
from flotilla.router.predictor.text import PredictorInput, chat_to_text

__all__ = [
    "BatchingParams",
    "BatchingPredictor",
    "FeatureLog",
    "LearnedPredictor",
    "LogSnapshot",
    "OnlineRefitter",
    "Predicted",
    "Prediction",
    "Predictor",
    "PredictorInput",
    "PromptLengthPredictor",
    "RefitOutcome",
    "RefitParams",
    "chat_to_text",
    "refit",
]
