"""Groups of runs: grids of settings x seeds, trained one after another or as Ray tasks, by one engine.

- `plan`: the cells (experiment files x augmentation cells x class weightings x `--grid` axes), one `Cell` type;
- `groups`: a cell's multi-seed group in MLflow: the one "is this group finished?" rule, and group resume;
- `backends`: where the runs execute (`BACKENDS`: local, Ray);
- `sweep`: `lungsound sweep`, the engine that opens each cell's group, trains its seeds on a backend and closes it;
- `grid`: `lungsound grid`, the RepAugment augmentation cells in front of the same engine, and their pivot table.
"""
