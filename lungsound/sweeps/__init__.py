"""Groups of runs: grids of settings x seeds, trained one after another or as Ray tasks.

- `sweep`: `lungsound sweep`, the one engine that plans cells, trains each as a multi-seed group and prints the table.
- `grid`: `lungsound grid`, the RepAugment augmentation cells and their pivot table, in front of the same engine.
- `backends`: where the runs execute (local, Ray).
"""
