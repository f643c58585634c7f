"""dyntex: learn dynamic textures from video with cooperative descriptor/generator ConvNets."""
import os

# Allocator settings, process-wide (see dyntex/allocator.py; each has an environment switch).
# Before torch is imported: PyTorch then backs large CPU tensors with transparent huge pages
# (paper size on 2 cores: 22.2 -> 20.5 s per iteration); no effect if torch was imported first.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .allocator import fix_mmap_threshold

fix_mmap_threshold()  # freed blocks >= 16 MiB go back to the system (paper peak RSS 4.11 -> 3.83 GB)

from .clips import load_inputs
from .config import Config, make_config
from .coop import CoopNets
from .errors import DyntexError
from .trainer import Trainer, load_model

__all__ = ["Config", "CoopNets", "DyntexError", "Trainer", "load_inputs", "load_model", "make_config"]
__version__ = "0.1.0"
