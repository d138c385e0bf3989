// SPDX-License-Identifier: GPL-2.0
/*
 * linklab: Cilium's "eBPF host routing" in miniature. Modelled on the kernel's
 * tools/testing/selftests/bpf/progs/test_tc_peer.c and test_tc_neigh.c.
 *
 * The builder fills two maps after attaching (one instance per attached program):
 *   ll_dests   destination address -> where it lives: the ifindex of the host-side device
 *              (veth end or netkit primary) of the local container that owns it and that
 *              container's MAC, or ifindex 0 for an address of the host itself (handed to
 *              the host's stack).
 *   ll_parent  [0] = ifindex of the parent NIC, for every other destination.
 * Keys are 16 bytes: an IPv6 address, or an IPv4 address mapped as ::ffff:a.b.c.d.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct ll_key {
	__u8 addr[16];
};

struct ll_dest {
	__u32 ifindex;
	__u8 mac[ETH_ALEN];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct ll_key);
	__type(value, struct ll_dest);
} ll_dests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ll_parent SEC(".maps");

#define IP4_DST_OFF (ETH_HLEN + 16)	/* offsetof(struct iphdr, daddr) */
#define IP6_DST_OFF (ETH_HLEN + 24)	/* offsetof(struct ipv6hdr, daddr) */

/* The destination of a unicast IP packet as a map key; 0 when it is not one we route
 * (ARP, ND and other link-local or multicast traffic stays with the stack). */
static __always_inline int dest_key(struct __sk_buff *skb, struct ll_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	if (skb->pkt_type != PACKET_HOST)
		return 0;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		key->addr[10] = 0xff;
		key->addr[11] = 0xff;
		if (bpf_skb_load_bytes(skb, IP4_DST_OFF, &key->addr[12], 4))
			return 0;
		return (key->addr[12] & 0xf0) != 0xe0;	/* not 224.0.0.0/4 */
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, IP6_DST_OFF, key->addr, 16))
			return 0;
		if (key->addr[0] == 0xff)			/* multicast */
			return 0;
		if (key->addr[0] == 0xfe && (key->addr[1] & 0xc0) == 0x80)	/* fe80::/10 */
			return 0;
		return 1;
	}
	return 0;
}

static __always_inline int to_parent(void)
{
	__u32 zero = 0, *parent = bpf_map_lookup_elem(&ll_parent, &zero);

	if (!parent || !*parent)
		return TC_ACT_OK;
	/* the neighbour subsystem of the host namespace picks the next hop: no forwarding
	 * decision, no netfilter forward hook (test_tc_neigh.c) */
	return bpf_redirect_neigh(*parent, NULL, 0, 0);
}

/* The frame is for the container now: its own MAC as destination (what a router would write;
 * netkit judges PACKET_HOST by it before the peer's stack sees the packet). */
static __always_inline void to_container(struct __sk_buff *skb, struct ll_dest *dest)
{
	bpf_skb_store_bytes(skb, 0, dest->mac, ETH_ALEN, 0);
}

/* tc ingress of each container's host-side veth: what the container sent */
SEC("tc/from_container")
int from_container(struct __sk_buff *skb)
{
	struct ll_key key;
	struct ll_dest *dest;

	if (!dest_key(skb, &key))
		return TC_ACT_OK;
	dest = bpf_map_lookup_elem(&ll_dests, &key);
	if (dest && dest->ifindex) {
		to_container(skb, dest);
		return bpf_redirect_peer(dest->ifindex, 0);	/* straight into the other container */
	}
	if (dest)
		return TC_ACT_OK;			/* the host's own address */
	return to_parent();
}

/* tc ingress of the parent NIC: what the LAN sends to a local container */
SEC("tc/from_parent")
int from_parent(struct __sk_buff *skb)
{
	struct ll_key key;
	struct ll_dest *dest;

	if (!dest_key(skb, &key))
		return TC_ACT_OK;
	dest = bpf_map_lookup_elem(&ll_dests, &key);
	if (dest && dest->ifindex) {
		to_container(skb, dest);
		return bpf_redirect_peer(dest->ifindex, 0);
	}
	return TC_ACT_OK;
}

/* netkit, attached as BPF_NETKIT_PEER through the primary: runs when the container
 * transmits, before the packet reaches the host namespace. TC_ACT_OK is NETKIT_PASS and
 * TC_ACT_REDIRECT is NETKIT_REDIRECT. A peer redirect is only allowed at tc ingress, so a
 * local container is reached by a plain redirect to its primary, whose transmit hands the
 * packet to its peer (the container) without the host stack. */
SEC("tc/netkit_peer")
int netkit_peer(struct __sk_buff *skb)
{
	struct ll_key key;
	struct ll_dest *dest;

	if (!dest_key(skb, &key))
		return TC_ACT_OK;
	dest = bpf_map_lookup_elem(&ll_dests, &key);
	if (dest && dest->ifindex) {
		to_container(skb, dest);
		return bpf_redirect(dest->ifindex, 0);
	}
	if (dest)
		return TC_ACT_OK;
	return to_parent();
}

char LICENSE[] SEC("license") = "GPL";
