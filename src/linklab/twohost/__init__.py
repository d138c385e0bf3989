"""The two-host split: one scenario built across two nodes (ci/nightly.md, "Two hosts").

- :mod:`~linklab.twohost.placement`: which hosts go to the peer, as data;
- :mod:`~linklab.twohost.uplink`: a node's NIC lent to a topology and moved back;
- :mod:`~linklab.twohost.remote`: the other end, one small class per ``REMOTE_TYPE`` (ssh or
  a namespace), so a check does not know which end is a machine;
- :mod:`~linklab.twohost.peer`: the agent on node-b (``python -m linklab.twohost.peer``) and
  node-a's client of it.
"""
