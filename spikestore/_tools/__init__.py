"""Tools built on the read side: what a store holds (``summary``), what one analysis task computes
from one block of stored records (``block_stats``), and where the stores are for a path that is not
one (``find_stores``)."""
