"""Training: corpus -> vocabulary -> token shards -> PyTorch training -> a model file run.c reads.

Every module here but `data` needs the optional `train` extra (`pip install -e '.[train]'`: torch and
sentencepiece). Nothing in the inference half imports this package, and the browser wheel does not
ship it (setup.py leaves it out when LLAMA2C_PURE=1).
"""
