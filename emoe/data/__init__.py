"""Data: MMSA loaders, the safe converted format, and the synthetic benchmark.

``load_data(path)`` opens a converted directory (no unpickling, memory-mapped) or an MMSA pickle
(trusted files only); ``make_synthetic(preset)`` builds the default benchmark with known reliabilities.
Nothing here imports torch: batches as tensors come from ``emoe.data.batches``.
"""

from emoe.data.arrays import DataSet, Split
from emoe.data.checks import DataError, check_compatible, is_token_text
from emoe.data.convert import convert_mmsa, load_converted, load_data, read_manifest, read_raw_text
from emoe.data.mmsa import KNOWN_SIZES, load_mmsa
from emoe.data.synthetic import PRESETS, SyntheticSpec, make_synthetic, synthetic_spec

__all__ = [
    "KNOWN_SIZES",
    "PRESETS",
    "DataError",
    "DataSet",
    "Split",
    "SyntheticSpec",
    "check_compatible",
    "convert_mmsa",
    "is_token_text",
    "load_converted",
    "load_data",
    "load_mmsa",
    "make_synthetic",
    "read_manifest",
    "read_raw_text",
    "synthetic_spec",
]
