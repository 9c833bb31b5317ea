"""Training and inference speed against the machine's matmul ceiling.

The console script `alexnet-benchmark` runs the same code (`alexnet_keras/cli/benchmark.py`).
"""

from alexnet_keras.cli.benchmark import main

if __name__ == "__main__":
    main()
