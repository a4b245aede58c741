"""Results across runs: what a researcher reads after training.

- `compare`: the comparison table of an MLflow experiment (mean +- std over seeds, comparable runs only).
- `rows`: the table's figures per run, row names and seed order (what `compare` and `paired` share).
- `paired`: seed-by-seed differences between two rows with a t interval and the paired t-test.
- `published`: the papers' figures each experiment file is compared with, and the rows that are extensions.
- `reports`: `lungsound evaluate`, a saved model scored again with its report (`lungsound.evaluation.report`).
- `device_ood`: the leave-one-stethoscope-out table.
"""
