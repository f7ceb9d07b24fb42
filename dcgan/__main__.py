from .cli import main

if __name__ == "__main__":  # python -m dcgan (and torchrun -m dcgan); not when a worker process imports it
    raise SystemExit(main())
