"""Datapath anatomy: the exact kernel path of every probe packet.

For each cell (scenario x check x family) its ICMP echo request and the echo reply are traced with
the kernel's stable tracepoints (``net:net_dev_queue``, ``net:net_dev_xmit``, ``net:netif_rx``,
``net:netif_receive_skb``; the frees ``skb:kfree_skb``, ``skb:consume_skb``) in tracefs
instances of the run's own, and counted at every netfilter hook of every namespace. The counts
do not depend on CPU speed or load, nor on other traffic on the machine: two runs, or the host
and the VM leg, give the same numbers for the same datapath.

declare: :mod:`.datapaths` (which datapaths and cells) · build + check: :mod:`.measure`
(:func:`~linklab.anatomy.measure.trace`) · kernel objects: :mod:`.tracefs`, :mod:`.nftcount` ·
report: :mod:`linklab.report.anatomy`.
"""
