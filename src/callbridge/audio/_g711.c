/* G.711 by table lookup, one C loop per frame (audio/g711.py keeps the tables and the numpy
 * fallback).
 *
 * Every sent frame is encoded and every received one decoded; with numpy an encode is three
 * calls (frombuffer, take, tobytes) whose fixed costs are most of the work for 160 samples, and
 * the load profile showed numpy at ~11 % of an echo worker. The tables stay in g711.py, which
 * computes them from the ITU-T G.191 reference and is tested against it sample by sample, so
 * this file decides nothing about the coding: it only indexes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyDoc_STRVAR(encode_doc,
"encode(table, pcm) -> bytes\n\n"
"Each PCM16 little-endian sample of `pcm` (any buffer, even length) as table[sample & 0xFFFF]:\n"
"`table` is 65,536 bytes, one code per 16-bit pattern.");

static PyObject *
g711_encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != 65536) {
        PyErr_SetString(PyExc_TypeError, "encode(table: bytes of 65536, pcm: buffer)");
        return NULL;
    }
    Py_buffer in;
    if (PyObject_GetBuffer(args[1], &in, PyBUF_SIMPLE) < 0)
        return NULL;
    if (in.len % 2) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "PCM16 input must have an even number of bytes");
        return NULL;
    }
    Py_ssize_t n = in.len / 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out != NULL) {
        const unsigned char *table = (const unsigned char *)PyBytes_AS_STRING(args[0]);
        const unsigned char *pcm = (const unsigned char *)in.buf;
        unsigned char *code = (unsigned char *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++)
            code[i] = table[pcm[2 * i] | (pcm[2 * i + 1] << 8)];
    }
    PyBuffer_Release(&in);
    return out;
}

PyDoc_STRVAR(decode_doc,
"decode(table, codes) -> bytes\n\n"
"Each byte of `codes` (any buffer) as the PCM16 little-endian sample at table[2 * code:][:2]:\n"
"`table` is 512 bytes, one sample per code.");

static PyObject *
g711_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != 512) {
        PyErr_SetString(PyExc_TypeError, "decode(table: bytes of 512, codes: buffer)");
        return NULL;
    }
    Py_buffer in;
    if (PyObject_GetBuffer(args[1], &in, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 2 * in.len);
    if (out != NULL) {
        const unsigned char *table = (const unsigned char *)PyBytes_AS_STRING(args[0]);
        const unsigned char *code = (const unsigned char *)in.buf;
        unsigned char *pcm = (unsigned char *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < in.len; i++) {
            pcm[2 * i] = table[2 * code[i]];
            pcm[2 * i + 1] = table[2 * code[i] + 1];
        }
    }
    PyBuffer_Release(&in);
    return out;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))g711_encode, METH_FASTCALL, encode_doc},
    {"decode", (PyCFunction)(void (*)(void))g711_decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callbridge.audio._g711",
    .m_doc = "G.711 table lookups in C (see audio/g711.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__g711(void)
{
    return PyModule_Create(&module_def);
}
