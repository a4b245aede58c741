"""Engine evaluation: how a model is scored, the moment it is scored.

- `metrics`: the ICBHI Sp / Se / Score (4-class and two-class), per class and per device (docs/methods.md section 6).
- `evaluate`: a model run over a split, the per-epoch evaluation the trainer selects epochs on (`lungsound evaluate`,
  which loads a saved model and writes its report, is `lungsound.results.reports.evaluate_checkpoint`).
- `report`: one evaluation written for a reader (confusion-matrix picture, per-class and per-device tables).
- `calibration`: the temperature fitted on the selecting split and stored in a model folder's `meta.json`.

The results of many runs side by side (comparison tables, paired tests, published numbers) are `lungsound.results`.
"""
