from .cli import entry

if __name__ == "__main__":  # python -m dcgan (and torchrun -m dcgan); not when a worker process imports it
    entry()
