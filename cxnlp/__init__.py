"""cxnlp: customer-journey analytics for reviews and support tickets.

>>> import cxnlp
>>> result = cxnlp.analyze("data/samples/reviews.jsonl")
>>> result.stage_summary
"""

from .about import SCHEMA_VERSION, __version__
from .config import Config, load_config
from .errors import ConfigError, CxnlpError, InputError, ModelError, PipelineError
from .pipeline import AnalysisResult, Analyzer, analyze

__all__ = [
    "SCHEMA_VERSION",
    "AnalysisResult",
    "Analyzer",
    "Config",
    "ConfigError",
    "CxnlpError",
    "InputError",
    "ModelError",
    "PipelineError",
    "__version__",
    "analyze",
    "load_config",
]
