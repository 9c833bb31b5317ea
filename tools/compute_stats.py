"""A dataset's mean and RGB PCA as a stats JSON for --stats_file.

The console script `alexnet-compute-stats` runs the same code,
`alexnet_keras/cli/compute_stats.py`.
"""

from alexnet_keras.cli.compute_stats import main

if __name__ == "__main__":
    main()
