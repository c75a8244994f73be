"""The write side: from a hook's tensor to committed chunks on disk.

``store`` (the public :class:`~spikestore.Store`) → ``capture`` (tensor to
frame, on the training thread) → ``writer`` (the background thread and its
byte-bounded queue) → ``assembly`` (records into chunks, commits in the
crash-safe order). Codecs and storage backends sit below; nothing here is
imported by the read side.
"""
