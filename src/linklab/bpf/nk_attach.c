// SPDX-License-Identifier: GPL-2.0
/*
 * nk_attach OBJ SECTION IFINDEX primary|peer
 *
 * Load one tc program of OBJ and attach it to a netkit device with BPF_LINK_CREATE
 * (model: tools/testing/selftests/bpf/prog_tests/tc_netkit.c). IFINDEX is always the
 * PRIMARY's, in the caller's namespace, for both attach points. Debian's libbpf 1.1.2
 * predates netkit, so the attach types are the kernel's numbers (uapi bpf.h, 6.7+).
 * Prints {"prog_id": N, "link_id": M} on one line, then holds the link until it is killed:
 * the link (and with it the program) lives as long as this process; the kernel detaches it
 * when the fd goes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define LL_BPF_NETKIT_PRIMARY 54
#define LL_BPF_NETKIT_PEER 55

int main(int argc, char **argv)
{
	struct bpf_prog_info prog_info = {};
	struct bpf_link_info link_info = {};
	__u32 len = sizeof(prog_info);
	struct bpf_program *p, *prog = NULL;
	struct bpf_object *obj;
	int ifindex, type, link_fd;

	if (argc != 5 || (strcmp(argv[4], "primary") && strcmp(argv[4], "peer"))) {
		fprintf(stderr, "usage: %s OBJ SECTION IFINDEX primary|peer\n", argv[0]);
		return 2;
	}
	ifindex = atoi(argv[3]);
	type = strcmp(argv[4], "primary") ? LL_BPF_NETKIT_PEER : LL_BPF_NETKIT_PRIMARY;
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		fprintf(stderr, "%s: cannot open: %s\n", argv[1], strerror(errno));
		return 1;
	}
	bpf_object__for_each_program(p, obj) {
		if (strcmp(bpf_program__section_name(p), argv[2])) {
			bpf_program__set_autoload(p, false);
			continue;
		}
		prog = p;
		bpf_program__set_type(p, BPF_PROG_TYPE_SCHED_CLS);
	}
	if (!prog) {
		fprintf(stderr, "%s: no section %s\n", argv[1], argv[2]);
		return 1;
	}
	if (bpf_object__load(obj)) {
		fprintf(stderr, "%s: load failed: %s\n", argv[1], strerror(errno));
		return 1;
	}
	link_fd = bpf_link_create(bpf_program__fd(prog), ifindex, type, NULL);
	if (link_fd < 0) {
		fprintf(stderr, "BPF_LINK_CREATE %s on ifindex %d: %s\n", argv[4], ifindex,
			strerror(-link_fd));
		return 1;
	}
	bpf_obj_get_info_by_fd(bpf_program__fd(prog), &prog_info, &len);
	len = sizeof(link_info);
	bpf_obj_get_info_by_fd(link_fd, &link_info, &len);
	printf("{\"prog_id\": %u, \"link_id\": %u}\n", prog_info.id, link_info.id);
	fflush(stdout);
	for (;;)
		pause();
}
