"""A built-in synthetic dataset in the exact ICBHI 2017 on-disk format.

The full ICBHI 2017 database (Rocha et al., Physiol. Meas. 2019) is a 2 GB download; so that every command, the
quickstart, the app and the tests run anywhere, this package writes a stand-in with the same layout, names and
formats: ``<patient>_<index>_<location>_<mode>_<device>.wav/.txt`` pairs, the official-style split, metadata,
diagnosis and fold files. The sounds follow a simple physical model (`sounds.py`): band-limited breath noise with
inspiratory/expiratory envelopes, crackles, wheezes, heart sounds and artefacts, passed through one of the four ICBHI
devices (`devices.py`). `generate_like_annotations` synthesises audio for real annotation files, so the official
split (4,142 train / 2,756 test cycles) runs end to end without the real audio.

    from lungsound.data.synthetic import generate
    report = generate("data/synthetic_icbhi", n_recordings=180, seed=0)
"""

from lungsound.data.synthetic.writer import (
    DEFAULT_RECORDINGS,
    GENERATOR_VERSION,
    GenerationReport,
    generate,
    generate_like_annotations,
    is_synthetic,
    read_marker,
)

__all__ = [
    "DEFAULT_RECORDINGS",
    "GENERATOR_VERSION",
    "GenerationReport",
    "generate",
    "generate_like_annotations",
    "is_synthetic",
    "read_marker",
]
