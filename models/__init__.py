"""nn.Modules and the model registry. torch only: no argparse, no data, no I/O."""

from models import autoencoder as _autoencoder  # noqa: F401  (registers the autoencoders)
from models import cnn as _cnn  # noqa: F401  (registers the CNN family)
from models import generative as _generative  # noqa: F401  (registers GANs and VAEs)
from models import rnn as _rnn  # noqa: F401  (registers the recurrent family)
from models.registry import ModelEntry, create_model, get_entry, list_models, make_config, register_model

__all__ = ["ModelEntry", "create_model", "get_entry", "list_models", "make_config", "register_model"]
