"""Tools built on the read side: what a store holds (``summary``) and what one analysis task computes
from one block of stored records (``block_stats``)."""
