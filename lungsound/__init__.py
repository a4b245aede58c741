"""lungsound: respiratory sound classification on ICBHI 2017.

Data flow, one sub-package per stage:
audio I/O (`lungsound.audio`) -> dataset and cycles (`lungsound.data`) -> features and augmentation
(`lungsound.features`) -> metrics (`lungsound.evaluation.metrics`) -> command line (`lungsound.cli`).
"""

from lungsound.errors import LungsoundError

__version__ = "0.1.0"
__all__ = ["LungsoundError", "__version__"]
