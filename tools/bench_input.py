"""Input pipeline images/s against raw JPEG decoding.

The console script `alexnet-bench-input` runs the same code (`alexnet_keras/cli/bench_input.py`).
"""

from alexnet_keras.cli.bench_input import main

if __name__ == "__main__":
    main()
