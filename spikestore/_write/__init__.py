"""The write side: from a hook's tensor to committed chunks on disk.

``store`` (the public :class:`~spikestore.Store`) → ``capture`` (tensor to
frame, on the training thread) → ``writer`` (the background thread and its
byte-bounded ``queue``) → ``assembly`` (records into chunks, commits in the
crash-safe order). Codecs and storage backends sit below; nothing here is
imported by the read side.

Each piece of state has one owner: ``clock`` the current step; ``streams``
each stream's index, call and producer on the training thread; ``assembly``
each stream's open segment and index arrays on the writer thread;
``failures`` the streams that stopped and the records a full queue dropped;
``root`` the root document. ``recorder`` is what monitors use of a store
beyond its public API. Around them: ``opening`` and ``lock`` (taking a store
for writing), ``group`` (this rank's part of a run recorded by a process
group), ``cuda`` and ``pinned`` (CUDA records), ``threads`` (the writer's
priority and helper threads), ``open_stores`` (every open store, closed at
exit), and the flight recorder: ``flight`` (its settings, the public
``FlightRecorder``), ``flight_checks`` (its triggers), ``flight_ring`` (the
steps it holds) and ``flight_state`` (what it keeps), all on the writer thread.
"""
