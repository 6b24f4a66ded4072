/* PCM16 measures in C (audio/levels.py keeps the numpy fallback and says what each one means).
 *
 * Every listening call measures the level of each 32 ms VAD chunk and of sampled played and
 * received frames; with numpy each is a frombuffer, a conversion and a dot product whose fixed
 * costs are most of the work for 160-256 samples (the VAD's alone was ~7 % of a listening
 * worker at 500 calls). One loop over the bytes does it without an array.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

PyDoc_STRVAR(energy_doc,
"energy(pcm) -> int\n\n"
"The sum of the squares of the PCM16 little-endian samples of `pcm` (any buffer, even length).");

static PyObject *
pcm_energy(PyObject *module, PyObject *arg)
{
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    if (in.len % 2) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "PCM16 input must have an even number of bytes");
        return NULL;
    }
    const unsigned char *pcm = (const unsigned char *)in.buf;
    Py_ssize_t n = in.len / 2;
    /* 2^30 per sample at most: 2^64 holds 2^34 samples, more than a buffer can be. */
    uint64_t sum = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t s = (int16_t)(uint16_t)(pcm[2 * i] | (pcm[2 * i + 1] << 8));
        sum += (uint64_t)(s * s);
    }
    PyBuffer_Release(&in);
    return PyLong_FromUnsignedLongLong(sum);
}

static PyMethodDef methods[] = {
    {"energy", (PyCFunction)pcm_energy, METH_O, energy_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callbridge.audio._pcm",
    .m_doc = "PCM16 measures in C (see audio/levels.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__pcm(void)
{
    return PyModule_Create(&module_def);
}
