/* llcost: per-operation cost of a datapath, for the instruction-clocked bench (QEMU TCG with
 * -icount shift=0: one guest nanosecond is one guest instruction).
 *
 * A client times only its loop with CLOCK_MONOTONIC and never waits on a timer while it
 * measures (under -icount sleep=off an idle wait makes the clock jump). It prints one line
 *   {"op": "udp-rr", "count": N, "ns": T, "bytes": B}     B: payload bytes the client sent
 * and exits 0; on failure one line on stderr naming what failed, exit 1.
 *
 *   servers (until SIGTERM)      clients
 *   llcost udp-echo ADDR PORT    llcost udp-rr DST PORT COUNT SIZE [--warmup W]
 *   llcost udp-sink ADDR PORT    llcost udp-stream DST PORT COUNT SIZE [--warmup W]
 *   llcost tcp-serve ADDR PORT   llcost tcp-crr DST PORT COUNT [--warmup W]
 *   llcost tcp-sink ADDR PORT    llcost tcp-stream DST PORT BYTES
 *                                llcost icmp-rr DST COUNT [--warmup W]      (root)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65507          /* largest UDP payload over IPv4 */
#define ICMP_DATA 56            /* as ping: 64-byte echo messages */
#define SINK_RCVBUF (64 << 20)
#define FIN_RESENDS 10
#ifndef ICMP_FILTER
#define ICMP_FILTER 1           /* linux/icmp.h: SOL_RAW option, a mask of ICMP types to drop */
#endif

struct dest {
	struct sockaddr_storage sa;
	socklen_t len;
	int family;
	const char *host, *port;    /* as given, for messages */
};

static const char *op = "";
static unsigned char buf[MAX_SIZE + 1];

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "llcost %s: ", op);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static long number(const char *what, const char *s, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		fail("%s must be an integer from %ld to %ld, not '%s'", what, min, max, s);
	return v;
}

static struct dest address(const char *host, const char *port)
{
	struct dest d = {.host = host, .port = port ? port : "-"};
	struct sockaddr_in *v4 = (struct sockaddr_in *)&d.sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&d.sa;
	uint16_t nport = htons(port ? number("PORT", port, 0, 65535) : 0);
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = nport;
		d.len = sizeof *v4;
	} else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = nport;
		d.len = sizeof *v6;
	} else {
		fail("'%s' is not an IPv4 or IPv6 address", host);
	}
	d.family = d.sa.ss_family;
	return d;
}

static int open_socket(const struct dest *d, int type, int proto)
{
	int fd = socket(d->family, type, proto);
	if (fd < 0)
		fail("socket for %s: %s", d->host, strerror(errno));
	return fd;
}

static void set_timeout(int fd, int opt, long seconds)
{
	struct timeval tv = {.tv_sec = seconds};
	if (setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv) < 0)
		fail("setsockopt timeout: %s", strerror(errno));
}

static void connect_to(int fd, const struct dest *d, const char *what)
{
	if (connect(fd, (struct sockaddr *)&d->sa, d->len) < 0)
		fail("connect%s to %s port %s: %s", what, d->host, d->port, strerror(errno));
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Round-trip and connection clients also time CHUNKS equal slices of their loop: a burst of
 * unrelated guest work (a kernel worker waking once) lands in one slice, and the median slice
 * is a figure it does not move. */
#define CHUNKS 10
static int64_t mark[CHUNKS + 1];
static int marks;

/* after operation i of warmup + count: the clock at each slice's end */
static void slice(long i, long warmup, long count)
{
	if (count % CHUNKS == 0 && i > warmup && (i - warmup) % (count / CHUNKS) == 0 &&
	    marks < CHUNKS)
		mark[++marks] = now_ns();
}

static int report(long count, int64_t ns, long long bytes)
{
	printf("{\"op\": \"%s\", \"count\": %ld, \"ns\": %lld, \"bytes\": %lld",
	       op, count, (long long)ns, bytes);
	if (marks == CHUNKS) {
		printf(", \"chunks\": [");
		for (int k = 1; k <= CHUNKS; k++)
			printf("%s%lld", k > 1 ? ", " : "", (long long)(mark[k] - mark[k - 1]));
		printf("]");
	}
	printf("}\n");
	return 0;
}

/* ---- servers ---------------------------------------------------------------------------- */

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

static _Noreturn void udp_serve(int fd, int sink)
{
	unsigned long count = 0;
	char reply[24];
	for (;;) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof from;
		ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
		if (n < 0 && errno != EINTR)
			fail("recvfrom: %s", strerror(errno));
		if (n < 0)
			continue;
		if (!sink) {            /* a lost echo is the client's timeout to report */
			sendto(fd, buf, n, 0, (struct sockaddr *)&from, flen);
		} else if (n == 1 && buf[0] == 'F') {
			n = snprintf(reply, sizeof reply, "%lu", count);
			sendto(fd, reply, n, 0, (struct sockaddr *)&from, flen);
			count = 0;
		} else {
			count++;
		}
	}
}

static void sink_buffer(int fd)
{
	int size = SINK_RCVBUF;
	socklen_t len = sizeof size;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) == 0)
		return;
	int err = errno;        /* no CAP_NET_ADMIN: SO_RCVBUF is capped at net.core.rmem_max */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, &len);
	fprintf(stderr, "llcost udp-sink: SO_RCVBUFFORCE: %s; receive buffer %d bytes, a burst "
		"may be dropped\n", strerror(err), size);
}

/* the next connection; a client that gave up before it was accepted is skipped */
static int accept_one(int fd)
{
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c >= 0)
			return c;
		if (errno != EINTR && errno != ECONNABORTED && errno != EPROTO)
			fail("accept: %s", strerror(errno));
	}
}

static _Noreturn void tcp_serve(int fd)
{
	for (;;) {
		int c = accept_one(fd);
		ssize_t n = read(c, buf, sizeof buf);
		if (n > 0)      /* a failure here is this connection's client's to report */
			n = write(c, buf, 1);
		close(c);
	}
}

/* read a stream to its end, answer with the byte count, close */
static _Noreturn void tcp_sink(int fd)
{
	char reply[24];
	for (;;) {
		int c = accept_one(fd);
		unsigned long long total = 0;
		ssize_t n;
		while ((n = read(c, buf, sizeof buf)) > 0)
			total += n;
		n = snprintf(reply, sizeof reply, "%llu", total);
		n = write(c, reply, n);         /* a short write is the client's to report */
		close(c);
	}
}

static _Noreturn void serve(const char *addr, const char *port)
{
	int tcp = !strcmp(op, "tcp-serve") || !strcmp(op, "tcp-sink"), one = 1;
	struct dest d = address(addr, port);
	int fd = open_socket(&d, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&d.sa, d.len) < 0)
		fail("bind %s port %s: %s", addr, port, strerror(errno));
	if (tcp && listen(fd, 4096) < 0)
		fail("listen %s port %s: %s", addr, port, strerror(errno));
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	if (!strcmp(op, "tcp-sink"))
		tcp_sink(fd);
	if (tcp)
		tcp_serve(fd);
	if (!strcmp(op, "udp-sink"))
		sink_buffer(fd);
	udp_serve(fd, !strcmp(op, "udp-sink"));
}

/* ---- clients ---------------------------------------------------------------------------- */

static int udp_rr(const struct dest *d, long count, long size, long warmup)
{
	int fd = open_socket(d, SOCK_DGRAM, 0);
	long total = warmup + count;
	int64_t t0 = now_ns();
	set_timeout(fd, SO_RCVTIMEO, 2);
	connect_to(fd, d, "");
	memset(buf, 'x', size);
	for (long i = 1; i <= total; i++) {
		if (i == warmup + 1)
			mark[0] = t0 = now_ns();
		if (send(fd, buf, size, 0) != size)
			fail("send, round trip %ld of %ld to %s port %s: %s", i, total, d->host,
			     d->port, strerror(errno));
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0)
			fail("recv, round trip %ld of %ld from %s port %s: %s", i, total, d->host,
			     d->port, errno == EAGAIN ? "no echo within 2 s" : strerror(errno));
		if (n != size)
			fail("round trip %ld of %ld: an echo of %zd bytes for %ld sent", i, total,
			     n, size);
		slice(i, warmup, count);
	}
	return report(count, now_ns() - t0, (long long)count * size);
}

static int icmp_rr(const struct dest *d, long count, long warmup)
{
	int v6 = d->family == AF_INET6;
	int fd = open_socket(d, SOCK_RAW, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
	unsigned char req[8 + ICMP_DATA] = {v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO};
	unsigned char want = v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY;
	uint16_t id = htons(getpid() & 0xffff);
	long total = warmup + count;
	int64_t t0 = now_ns();
	/* a raw socket gets a copy of every ICMP message the namespace receives: let the
	 * kernel drop all but echo replies, so neighbour discovery does not wake us */
	if (v6) {
		struct icmp6_filter f;
		ICMP6_FILTER_SETBLOCKALL(&f);
		ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f);
		setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f);
	} else {
		uint32_t drop = ~(1U << ICMP_ECHOREPLY);
		setsockopt(fd, SOL_RAW, ICMP_FILTER, &drop, sizeof drop);
	}
	set_timeout(fd, SO_RCVTIMEO, 2);
	connect_to(fd, d, "");  /* a connected raw socket only receives from DST */
	memcpy(req + 4, &id, 2);
	for (long i = 1; i <= total; i++) {
		uint16_t seq = htons(i & 0xffff);
		uint32_t sum = 0;
		if (i == warmup + 1)
			mark[0] = t0 = now_ns();
		memcpy(req + 6, &seq, 2);
		if (!v6) {      /* the kernel fills in ICMPv6 checksums, not ICMPv4 ones */
			req[2] = req[3] = 0;
			for (size_t k = 0; k < sizeof req; k += 2)
				sum += (uint32_t)req[k] << 8 | req[k + 1];
			while (sum >> 16)
				sum = (sum & 0xffff) + (sum >> 16);
			req[2] = ~sum >> 8;
			req[3] = ~sum & 0xff;
		}
		if (send(fd, req, sizeof req, 0) != sizeof req)
			fail("send echo %ld of %ld to %s: %s", i, total, d->host, strerror(errno));
		for (;;) {
			ssize_t n = recv(fd, buf, sizeof buf, 0);
			unsigned char *m = buf;
			if (n < 0)
				fail("recv, echo %ld of %ld from %s: %s", i, total, d->host,
				     errno == EAGAIN ? "no reply within 2 s" : strerror(errno));
			if (!v6 && n > 0) {     /* IPv4 raw sockets get the IP header too */
				n -= (buf[0] & 0x0f) * 4;
				m += (buf[0] & 0x0f) * 4;
			}
			if (n >= 8 && m[0] == want && !memcmp(m + 4, &id, 2) &&
			    !memcmp(m + 6, &seq, 2))
				break;
		}
		slice(i, warmup, count);
	}
	return report(count, now_ns() - t0, (long long)count * sizeof req);
}

static unsigned long fin(int fd, const struct dest *d)
{
	for (int sent = 0; sent <= FIN_RESENDS; sent++) {
		if (send(fd, "F", 1, 0) != 1)
			fail("send FIN to %s port %s: %s", d->host, d->port, strerror(errno));
		ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
		if (n > 0) {
			buf[n] = 0;
			return strtoul((char *)buf, NULL, 10);
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			fail("recv count from udp-sink %s port %s: %s", d->host, d->port,
			     strerror(errno));
	}
	fail("no count from udp-sink %s port %s after %d FINs, 1 s each", d->host, d->port,
	     FIN_RESENDS + 1);
	return 0;
}

static void stream(int fd, const struct dest *d, long count, long size, const char *phase)
{
	memset(buf, 0, size);   /* never "F": a 1-byte datagram "F" is a FIN */
	for (long i = 1; i <= count; i++)
		while (send(fd, buf, size, 0) < 0)
			if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
				fail("send %sdatagram %ld of %ld to %s port %s: %s", phase, i,
				     count, d->host, d->port, strerror(errno));
	unsigned long got = fin(fd, d);
	if (got < (unsigned long)count)
		fail("udp-sink received %lu of %ld %sdatagrams (drops)", got, count, phase);
	if (got > (unsigned long)count)
		fail("udp-sink received %lu datagrams for %ld %sdatagrams sent (another sender, or "
		     "an earlier run cut short before its FIN)", got, count, phase);
}

/* On one CPU the sink would run whenever the scheduler preempts the sender (at a timer tick,
 * whose phase differs from run to run), draining the datagrams in batches of varying size,
 * and the cost per datagram with them (1-4 %). As a SCHED_FIFO task the sender is never
 * preempted by the sink: every datagram is queued (softirq runs in the sender's own context),
 * and the sink drains them all once the sender waits for the count. */
static void sender_first(void)
{
	struct sched_param sp = {.sched_priority = 1};
	if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
		fprintf(stderr, "llcost udp-stream: SCHED_FIFO: %s; batches follow the scheduler\n",
			strerror(errno));
}

static int udp_stream(const struct dest *d, long count, long size, long warmup)
{
	int fd = open_socket(d, SOCK_DGRAM, 0);
	sender_first();
	set_timeout(fd, SO_RCVTIMEO, 1);
	connect_to(fd, d, "");
	if (warmup) {
		stream(fd, d, warmup, size, "warm-up ");
		while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
			;       /* the answers to FINs sent again */
	}
	int64_t t0 = now_ns();
	stream(fd, d, count, size, "");
	return report(count, now_ns() - t0, (long long)count * size);
}

static int tcp_crr(const struct dest *d, long count, long warmup)
{
	long total = warmup + count;
	int64_t t0 = now_ns();
	char what[48];
	for (long i = 1; i <= total; i++) {
		int fd = open_socket(d, SOCK_STREAM, 0);
		if (i == warmup + 1)
			mark[0] = t0 = now_ns();
		set_timeout(fd, SO_SNDTIMEO, 2);        /* bounds connect() too */
		set_timeout(fd, SO_RCVTIMEO, 2);
		snprintf(what, sizeof what, " %ld of %ld", i, total);
		connect_to(fd, d, what);
		if (write(fd, "x", 1) != 1)
			fail("write, connection %ld of %ld to %s port %s: %s", i, total, d->host,
			     d->port, strerror(errno));
		ssize_t n = read(fd, buf, 1);
		if (n != 1)
			fail("read, connection %ld of %ld from %s port %s: %s", i, total, d->host,
			     d->port, n == 0 ? "closed without a reply"
			     : errno == EAGAIN ? "no reply within 2 s" : strerror(errno));
		close(fd);
		slice(i, warmup, count);
	}
	return report(count, now_ns() - t0, count);
}

/* BYTES over one connection, connect to the sink's count (the copy cost of a volume) */
static int tcp_stream(const struct dest *d, long long bytes)
{
	int fd = open_socket(d, SOCK_STREAM, 0);
	/* slices of BYTES / CHUNKS written (the last ends with the sink's count) */
	long long per = bytes % CHUNKS == 0 ? bytes / CHUNKS : 0, next = per;
	int64_t t0 = mark[0] = now_ns();
	set_timeout(fd, SO_SNDTIMEO, 2);
	set_timeout(fd, SO_RCVTIMEO, 2);
	connect_to(fd, d, "");
	memset(buf, 'x', sizeof buf);
	for (long long left = bytes; left > 0;) {
		size_t chunk = left < 65536 ? (size_t)left : 65536;
		ssize_t n = write(fd, buf, chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fail("write to %s port %s after %lld of %lld bytes: %s", d->host, d->port,
			     bytes - left, bytes, n < 0 ? strerror(errno) : "nothing written");
		left -= n;
		for (; per && bytes - left >= next && marks < CHUNKS - 1; next += per)
			mark[++marks] = now_ns();
	}
	if (shutdown(fd, SHUT_WR) < 0)
		fail("shutdown to %s port %s: %s", d->host, d->port, strerror(errno));
	ssize_t n = read(fd, buf, 32);
	if (n <= 0)
		fail("no byte count from tcp-sink %s port %s: %s", d->host, d->port,
		     n == 0 ? "closed" : errno == EAGAIN ? "none within 2 s" : strerror(errno));
	buf[n] = 0;
	if (strtoull((char *)buf, NULL, 10) != (unsigned long long)bytes)
		fail("tcp-sink %s port %s received %s of %lld bytes", d->host, d->port,
		     (char *)buf, bytes);
	int64_t ns = now_ns() - t0;
	if (per)
		mark[++marks] = t0 + ns;
	close(fd);
	return report(1, ns, bytes);
}

int main(int argc, char **argv)
{
	const char *arg[6];
	long warmup = 0;
	int n = 0, warm = 0;
	signal(SIGPIPE, SIG_IGN);       /* a peer's reset is an error to name, not a death */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
			warm = 1, warmup = number("--warmup", argv[++i], 0, INT_MAX);
		else if (n < 6)
			arg[n++] = argv[i];
	}
	op = n ? arg[0] : "";
	int server = !strcmp(op, "udp-echo") || !strcmp(op, "udp-sink") ||
		     !strcmp(op, "tcp-serve") || !strcmp(op, "tcp-sink");
	if (server && n == 3 && warm)
		fail("--warmup is for clients only");
	if (server && n == 3)
		serve(arg[1], arg[2]);
	if (!strcmp(op, "icmp-rr") && n == 3) {
		struct dest d = address(arg[1], NULL);
		return icmp_rr(&d, number("COUNT", arg[2], 1, INT_MAX), warmup);
	}
	if (!strcmp(op, "tcp-stream") && n == 4 && !warm) {
		struct dest d = address(arg[1], arg[2]);
		return tcp_stream(&d, number("BYTES", arg[3], 1, LONG_MAX));
	}
	if (!strcmp(op, "tcp-crr") && n == 4) {
		struct dest d = address(arg[1], arg[2]);
		return tcp_crr(&d, number("COUNT", arg[3], 1, INT_MAX), warmup);
	}
	if ((!strcmp(op, "udp-rr") || !strcmp(op, "udp-stream")) && n == 5) {
		struct dest d = address(arg[1], arg[2]);
		long count = number("COUNT", arg[3], 1, INT_MAX);
		long size = number("SIZE", arg[4], 1, MAX_SIZE);
		if (!strcmp(op, "udp-rr"))
			return udp_rr(&d, count, size, warmup);
		return udp_stream(&d, count, size, warmup);
	}
	fprintf(stderr, "usage: llcost udp-echo|udp-sink|tcp-serve ADDR PORT; udp-rr|udp-stream "
		"DST PORT COUNT SIZE; tcp-crr DST PORT COUNT; tcp-sink ADDR PORT; tcp-stream DST "
		"PORT BYTES; icmp-rr DST COUNT; clients but tcp-stream take --warmup W\n");
	return 1;
}
