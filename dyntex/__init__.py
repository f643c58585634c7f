"""dyntex: learn dynamic textures from video with cooperative descriptor/generator ConvNets."""
import os

# Before torch is imported: PyTorch's CPU allocator then backs large tensors (>= 2 MB) with
# transparent huge pages, so the hundreds of MB that each iteration allocates afresh cost 512x
# fewer page faults (paper size on 2 cores: 22.2 -> 20.5 s per iteration). Same values, other pages;
# THP_MEM_ALLOC_ENABLE=0 in the environment turns it off. No effect if torch was imported first.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .clips import load_inputs
from .config import Config, make_config
from .coop import CoopNets
from .errors import DyntexError
from .trainer import Trainer, load_model

__all__ = ["Config", "CoopNets", "DyntexError", "Trainer", "load_inputs", "load_model", "make_config"]
__version__ = "0.1.0"
