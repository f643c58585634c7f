"""dyntex: learn dynamic textures from video with cooperative descriptor/generator ConvNets."""
from .clips import load_inputs
from .config import Config, make_config
from .coop import CoopNets
from .errors import DyntexError
from .trainer import Trainer, load_model

__all__ = ["Config", "CoopNets", "DyntexError", "Trainer", "load_inputs", "load_model", "make_config"]
__version__ = "0.1.0"
