"""Difficulty of a dataset for a simple model: logistic regression on pooled fbank features.

Features per cycle: the mean, standard deviation and maximum over time of each of the 128 normalised fbank bins (the
8-s repeat-padded cycles of docs/methods.md sections 2-3), standardised; class-balanced logistic regression fitted on the
train split, ICBHI Sp/Se/Score on the test split. Prints one line per regularisation strength.

    python benchmarks/synthetic_baseline.py [--root PATH]     # default: the built-in synthetic set
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lungsound.data.database import open_database
from lungsound.data.dataset import CycleDataset
from lungsound.data.default import resolve_root
from lungsound.evaluation.metrics import format_scores, icbhi_scores


def pooled(ds: CycleDataset) -> np.ndarray:
    x = np.asarray(ds.arrays)[ds.rows]
    return np.concatenate([x.mean(1), x.std(1), x.max(1)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None)
    args = parser.parse_args()
    db = open_database(resolve_root(args.root))
    train = CycleDataset.from_split(db, "train", progress=False)
    test = CycleDataset.from_split(db, "test", progress=False)
    scaler = StandardScaler().fit(pooled(train))
    xtr, xte = scaler.transform(pooled(train)), scaler.transform(pooled(test))
    print(f"{db.root}: {len(train)} train / {len(test)} test cycles; all-normal baseline Score 50.00")
    for c in (0.01, 0.1, 1.0):
        clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(xtr, train.labels)
        print(f"logistic regression C={c:<5} " + format_scores(icbhi_scores(test.labels, clf.predict(xte))))


if __name__ == "__main__":
    main()
