/* Compiled page skeleton for <img> extraction: the same result as the numpy pass in
 * danqing_assets/lib/html.py (`_skeleton_numpy`), in one C pass over the page.
 *
 * The Python side owns the tag table (`_KEEP_CLASSES`, hashed into 4096 slots) and hands it over once with
 * `set_tables`; this file only knows the class numbers, which must equal html.py's. Optional: when the extension
 * is not built (no C compiler), html.py uses the numpy pass, which gives byte-identical output (tested).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { KEPT = 1, FIGC_OPEN = 2, FIG_CLOSE = 3, BASE = 4, NEST_OPEN = 5, NEST_CLOSE = 6, FIG_OPEN = 7 };

#define SLOTS 4096
static uint32_t g_codes[SLOTS];
static uint8_t g_classes[SLOTS];
static uint32_t g_mult = 0, g_shift = 20;
static int g_ready = 0;

static PyObject *set_tables(PyObject *self, PyObject *args) {
    Py_buffer codes, classes;
    unsigned long mult, shift;
    if (!PyArg_ParseTuple(args, "y*y*kk", &codes, &classes, &mult, &shift)) return NULL;
    if (codes.len != (Py_ssize_t)sizeof(g_codes) || classes.len != (Py_ssize_t)sizeof(g_classes) || shift > 31) {
        PyBuffer_Release(&codes);
        PyBuffer_Release(&classes);
        PyErr_SetString(PyExc_ValueError, "set_tables: expected 4096 uint32 codes, 4096 uint8 classes, shift < 32");
        return NULL;
    }
    memcpy(g_codes, codes.buf, sizeof(g_codes));
    memcpy(g_classes, classes.buf, sizeof(g_classes));
    g_mult = (uint32_t)mult;
    g_shift = (uint32_t)shift;
    g_ready = 1;
    PyBuffer_Release(&codes);
    PyBuffer_Release(&classes);
    Py_RETURN_NONE;
}

/* skeleton(html: bytes, max_depth: int) -> (skeleton: bytes, cut_at: int | None, depth: int,
 *                                           has_figcaption: bool, has_base: bool)
 * max_depth < 0: no nesting guard. Pages shorter than 8 bytes are handled by the caller. */
static PyObject *skeleton(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t max_depth;
    if (!g_ready) {
        PyErr_SetString(PyExc_RuntimeError, "skeleton: set_tables was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*n", &view, &max_depth)) return NULL;
    const uint8_t *a = (const uint8_t *)view.buf;
    const Py_ssize_t n = view.len;
    if (n < 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "skeleton: page shorter than 8 bytes");
        return NULL;
    }
    /* every "<" in a[0 .. n-5] with its class and whether it is dropped */
    Py_ssize_t cap = 256, m = 0;
    Py_ssize_t *pos = PyMem_Malloc(cap * sizeof(Py_ssize_t));
    uint8_t *cls = PyMem_Malloc(cap);
    uint8_t *drop = PyMem_Malloc(cap);
    PyObject *result = NULL;
    if (!pos || !cls || !drop) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t counts[8] = {0};
    const Py_ssize_t limit = n - 4;
    const uint8_t *p = a, *end = a + limit;
    Py_BEGIN_ALLOW_THREADS
    while (p < end) {
        const uint8_t *q = memchr(p, '<', (size_t)(end - p));
        if (!q) break;
        Py_ssize_t i = q - a;
        uint32_t code = ((uint32_t)(a[i + 1] | 0x20)) | ((uint32_t)(a[i + 2] | 0x20) << 8) |
                        ((uint32_t)(a[i + 3] | 0x20) << 16) | ((uint32_t)(a[i + 4] | 0x20) << 24);
        uint32_t slot = (code * g_mult) >> g_shift;
        uint8_t c = g_codes[slot] == code ? g_classes[slot] : 0;
        uint8_t first = a[i + 1] | 0x20;
        uint8_t d = (c == 0) && ((first >= 0x61 && first <= 0x7A) || first == 0x2F);
        if (m == cap) {
            Py_ssize_t ncap = cap * 2;
            Py_ssize_t *npos = PyMem_Realloc(pos, ncap * sizeof(Py_ssize_t));
            if (npos) pos = npos;
            uint8_t *ncls = npos ? PyMem_Realloc(cls, ncap) : NULL;
            if (ncls) cls = ncls;
            uint8_t *ndrop = ncls ? PyMem_Realloc(drop, ncap) : NULL;
            if (ndrop) drop = ndrop;
            if (!ndrop) {
                m = -1;
                break;
            }
            cap = ncap;
        }
        pos[m] = i;
        cls[m] = c;
        drop[m] = d;
        counts[c]++;
        m++;
        p = q + 1;
    }
    Py_END_ALLOW_THREADS
    if (m < 0) {
        PyErr_NoMemory();
        goto done;
    }
    int has_figcaption = counts[FIGC_OPEN] > 0;
    if (has_figcaption && counts[FIG_OPEN] > 0) {
        /* keep all markup from each outermost <figure> to its matching </figure> (to the end when unclosed) */
        Py_ssize_t depth = 0, start = 0;
        for (Py_ssize_t k = 0; k < m; k++) {
            if (cls[k] == FIG_OPEN) {
                if (depth == 0) start = k;
                depth++;
            } else if (cls[k] == FIG_CLOSE && depth > 0) {
                Py_ssize_t at = pos[k] + 5 < n - 1 ? pos[k] + 5 : n - 1;
                if ((a[at] | 0x20) == 0x75) { /* "</figu", not "</figcaption" */
                    depth--;
                    if (depth == 0) memset(drop + start, 0, (size_t)(k - start));
                }
            }
        }
        if (depth > 0) memset(drop + start, 0, (size_t)(m - start));
    }
    Py_ssize_t cut_at = -1, max_seen = 0;
    if (max_depth >= 0 && counts[FIGC_OPEN] + counts[NEST_OPEN] + counts[FIG_OPEN] > max_depth) {
        Py_ssize_t level = 0;
        for (Py_ssize_t k = 0; k < m; k++) {
            uint8_t c = cls[k];
            if (c == FIGC_OPEN || c == NEST_OPEN || c == FIG_OPEN) level++;
            else if ((c == FIG_CLOSE || c == NEST_CLOSE) && level > 0) level--;
            if (level > max_seen) max_seen = level;
            if (cut_at < 0 && level > max_depth) cut_at = pos[k];
        }
    }
    Py_ssize_t out_len = cut_at < 0 ? n : cut_at;
    PyObject *out = PyBytes_FromStringAndSize((const char *)a, out_len);
    if (!out) goto done;
    char *o = PyBytes_AS_STRING(out);
    for (Py_ssize_t k = 0; k < m; k++) {
        if (drop[k] && pos[k] < out_len) o[pos[k]] = '\x02';
    }
    PyObject *cut = cut_at < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(cut_at);
    if (!cut) {
        Py_DECREF(out);
        goto done;
    }
    result = Py_BuildValue("(NNnOO)", out, cut, max_seen, has_figcaption ? Py_True : Py_False,
                           counts[BASE] > 0 ? Py_True : Py_False);
done:
    PyMem_Free(pos);
    PyMem_Free(cls);
    PyMem_Free(drop);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"set_tables", set_tables, METH_VARARGS, "Install the kept-tag hash table (codes, classes, mult, shift)."},
    {"skeleton", skeleton, METH_VARARGS,
     "skeleton(html, max_depth) -> (bytes, cut_at | None, depth, has_figcaption, has_base); max_depth < 0: no guard."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_skeleton", "Compiled page skeleton (see html.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__skeleton(void) { return PyModule_Create(&module); }
