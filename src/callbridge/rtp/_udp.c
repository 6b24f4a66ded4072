/* The RTP socket's two per-packet system calls, without the interpreter around them.
 *
 * A leg's tick reads what its RTP socket holds and sends one packet (rtp/socket.py). Done with
 * the socket module that is three system calls (the read that finds the datagram, the read that
 * finds none and ends the drain, the sendto) and, per packet, an exception, an ancillary-data
 * list and an address parsed from a tuple: about half of an echo call's CPU (issue 12's
 * profile). Here a drain is one recvmmsg(2) (Linux: it returns what is queued and stops at the
 * first empty read inside the kernel), and a send is one sendto(2) to an address packed once per
 * remote. The semantics are the Python fallback's in rtp/socket.py exactly; the tests run both.
 *
 * Built with the mypyc modules (callbridge.cli.native); no state, no threads, the GIL held (the
 * calls never block: MSG_DONTWAIT, non-blocking sockets).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_DATAGRAM 4096 /* rtp/socket.py MAX_DATAGRAM: a longer datagram is cut */
#define MAX_BATCH 64      /* the most one drain reads (its limit is clamped to this) */

/* Room for one struct timespec of SO_TIMESTAMPNS, as the Python side asks for. */
#define ANC_SPACE CMSG_SPACE(sizeof(struct timespec))

/* Reused by every drain: filled, then copied into bytes objects before any Python runs. */
static char buffers[MAX_BATCH][MAX_DATAGRAM];
static char controls[MAX_BATCH][ANC_SPACE];
static struct sockaddr_storage sources[MAX_BATCH];

static PyObject *
host_port(const char *host, unsigned short port)
{
    PyObject *h = PyUnicode_FromString(host);
    PyObject *p = h ? PyLong_FromLong(port) : NULL;
    PyObject *pair = p ? PyTuple_Pack(2, h, p) : NULL;
    Py_XDECREF(h);
    Py_XDECREF(p);
    return pair;
}

static PyObject *
address_of(const struct sockaddr_storage *ss)
{
    /* (host, port), as the socket module gives it minus IPv6's flow info and scope id. */
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return host_port(host, ntohs(sin->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return host_port(host, ntohs(sin6->sin6_port));
    }
    return host_port("", 0); /* no source (cannot happen on a UDP socket) */
}

static double
age_of(struct msghdr *msg, double wall)
{
    /* Seconds since the kernel received the datagram (SO_TIMESTAMPNS), 0 when it has no
     * timestamp or the wall clock stepped back. */
    struct cmsghdr *c;
    for (c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            double age = wall - ((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
            return age > 0.0 ? age : 0.0;
        }
    }
    return 0.0;
}

static double
wall_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static int
read_batch(int fd, unsigned int want, struct mmsghdr *msgs, struct iovec *iov)
{
    /* Up to `want` datagrams into the static buffers: how many, or -1 with errno. */
    for (unsigned int i = 0; i < want; i++) {
        iov[i].iov_base = buffers[i];
        iov[i].iov_len = MAX_DATAGRAM;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_name = &sources[i];
        msgs[i].msg_hdr.msg_namelen = sizeof sources[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = controls[i];
        msgs[i].msg_hdr.msg_controllen = ANC_SPACE;
        msgs[i].msg_len = 0;
    }
#ifdef __linux__
    return recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
#else
    unsigned int n = 0;
    while (n < want) {
        ssize_t got = recvmsg(fd, &msgs[n].msg_hdr, MSG_DONTWAIT);
        if (got < 0)
            return n ? (int)n : -1;
        msgs[n++].msg_len = (unsigned int)got;
    }
    return (int)n;
#endif
}

PyDoc_STRVAR(drain_doc,
"drain(fd, limit) -> tuple of (datagram, (host, port), age)\n\n"
"Read at most `limit` datagrams waiting on the non-blocking UDP socket `fd` now, without\n"
"waiting. age: seconds since the kernel received each (SO_TIMESTAMPNS), 0 if unknown. A\n"
"pending socket error is read (so gone) and counts against the limit, as a read.");

static int
arguments(const char *call, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, int *fd)
{
    /* Checks the count and reads the descriptor (args[0]): 0, or -1 with the error set. */
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", call, want);
        return -1;
    }
    long value = PyLong_AsLong(args[0]);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0 || value > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: not a file descriptor: %ld", call, value);
        return -1;
    }
    *fd = (int)value;
    return 0;
}

static PyObject *
udp_drain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    if (arguments("drain(fd, limit)", args, nargs, 2, &fd) < 0)
        return NULL;
    long limit = PyLong_AsLong(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit > MAX_BATCH)
        limit = MAX_BATCH;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    PyObject *out[MAX_BATCH];
    Py_ssize_t count = 0;
    long tries = 0;
    double wall = 0.0;
    while (tries < limit) {
        unsigned int want = (unsigned int)(limit - tries);
        int got = read_batch(fd, want, msgs, iov);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            if (errno == EBADF || errno == ENOTSOCK) /* closed under us: nothing to read */
                break;
            tries++; /* a pending socket error: now read, so gone; try again */
            continue;
        }
        tries += got;
        if (got > 0 && wall == 0.0)
            wall = wall_now();
        for (int i = 0; i < got; i++) {
            PyObject *data = PyBytes_FromStringAndSize(buffers[i], msgs[i].msg_len);
            PyObject *source = data ? address_of(&sources[i]) : NULL;
            PyObject *age = source ? PyFloat_FromDouble(age_of(&msgs[i].msg_hdr, wall)) : NULL;
            PyObject *item = age ? PyTuple_Pack(3, data, source, age) : NULL;
            Py_XDECREF(data);
            Py_XDECREF(source);
            Py_XDECREF(age);
            if (item == NULL) {
                while (count > 0)
                    Py_DECREF(out[--count]);
                return NULL;
            }
            out[count++] = item;
        }
        if ((unsigned int)got < want) /* the queue is empty (or an error waits: next time) */
            break;
    }
    PyObject *result = PyTuple_New(count);
    if (result == NULL) {
        while (count > 0)
            Py_DECREF(out[--count]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        PyTuple_SET_ITEM(result, i, out[i]);
    return result;
}

PyDoc_STRVAR(pack_address_doc,
"pack_address(host, port) -> bytes\n\n"
"The numeric IPv4 or IPv6 address (host, port) as the struct sockaddr that send() takes.\n"
"Raises ValueError for a host that is not a numeric address.");

static PyObject *
udp_pack_address(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "pack_address(host, port) takes two arguments");
        return NULL;
    }
    const char *host = PyUnicode_AsUTF8(args[0]);
    long port = PyLong_AsLong(args[1]);
    if (host == NULL || PyErr_Occurred())
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "port out of range: %ld", port);
        return NULL;
    }
    /* Numeric only (never a DNS lookup in the media pass); a scoped IPv6 address (fe80::1%eth0)
     * keeps its scope. */
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    char service[8];
    snprintf(service, sizeof service, "%ld", port);
    if (getaddrinfo(host, service, &hints, &found) == 0 && found != NULL) {
        PyObject *packed =
            PyBytes_FromStringAndSize((const char *)found->ai_addr, (Py_ssize_t)found->ai_addrlen);
        freeaddrinfo(found);
        return packed;
    }
    PyErr_Format(PyExc_ValueError, "not a numeric IP address: %R", args[0]);
    return NULL;
}

PyDoc_STRVAR(send_doc,
"send(fd, data, address) -> int\n\n"
"sendto(2) `data` on the non-blocking socket `fd` to `address` (from pack_address). Returns 0,\n"
"or the errno of a send that failed (a full buffer, a pending socket error): never raises for\n"
"those, as a lost media packet is not an error.");

static PyObject *
udp_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    if (arguments("send(fd, data, address)", args, nargs, 3, &fd) < 0)
        return NULL;
    if (!PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "send(fd, data: bytes, address: bytes)");
        return NULL;
    }
    Py_ssize_t alen = PyBytes_GET_SIZE(args[2]);
    if (alen != (Py_ssize_t)sizeof(struct sockaddr_in) &&
        alen != (Py_ssize_t)sizeof(struct sockaddr_in6)) {
        PyErr_SetString(PyExc_ValueError, "address: not from pack_address");
        return NULL;
    }
    ssize_t sent;
    do {
        sent = sendto(fd, PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1]),
                      MSG_DONTWAIT, (const struct sockaddr *)PyBytes_AS_STRING(args[2]),
                      (socklen_t)alen);
    } while (sent < 0 && errno == EINTR);
    return PyLong_FromLong(sent < 0 ? errno : 0);
}

static PyMethodDef methods[] = {
    {"drain", (PyCFunction)(void (*)(void))udp_drain, METH_FASTCALL, drain_doc},
    {"pack_address", (PyCFunction)(void (*)(void))udp_pack_address, METH_FASTCALL,
     pack_address_doc},
    {"send", (PyCFunction)(void (*)(void))udp_send, METH_FASTCALL, send_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callbridge.rtp._udp",
    .m_doc = "The RTP socket's per-packet system calls in C (see rtp/socket.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__udp(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_DATAGRAM", MAX_DATAGRAM) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
