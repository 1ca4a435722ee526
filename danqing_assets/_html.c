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

/* ------------------------------------------------------------------------------------------------------------
 * scan_images: the <img> elements of a page, by an HTML tokenizer (WHATWG states for tags, attributes, comments,
 * RCDATA / RAWTEXT / script data with its escape states, PLAINTEXT) instead of a parse. Tree construction is that
 * of the page skeleton (see html.py): only <img>/<image>, <base>, <figure> and <figcaption> build structure, and
 * pages this cannot answer exactly return None so the caller parses them with Lexbor instead:
 *   - a <template> inside a <figure>, or <svg> / <math> content that is not inert (see skip_foreign);
 *   - inside a <figure>, markup whose tree is not its token nesting: a tag other than img / image / figure /
 *     figcaption / void elements / raw-text elements / FIGURE_ELEMENTS, an element not closed by its own end tag,
 *     a second <a> inside an <a>, a <figure> or <figcaption> inside a <figcaption>, or raw text, foreign content
 *     or <plaintext> inside a <figcaption> (the caption would depend on general tree building);
 *   - <figure> / <figcaption> nested deeper than max_depth (the Lexbor path cuts such pages).
 * Result: (base_href: str | None, imgs: [(attrs: dict, figure_no: int, has_amp: bool)], captions: [str | None]
 * by figure_no), has_amp: some value in attrs contains "&".
 * attrs holds the attributes extraction reads (IMG_ATTRS), first occurrence, NUL -> U+FFFD, CR/CRLF -> LF,
 * UTF-8 decoded with replacement, character references NOT decoded (the caller decodes them); None for an
 * attribute without "=". A caption is the raw text of the figure's first <figcaption> child, NULs dropped, a
 * space wherever Lexbor would start a new text node (the caller decodes references and collapses whitespace).
 * ------------------------------------------------------------------------------------------------------------ */
#define IS_WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\f' || (c) == '\r')
#define IS_ALPHA(c) ((uint8_t)((c) | 0x20) >= 'a' && (uint8_t)((c) | 0x20) <= 'z')

#define N_IMG_ATTRS 8
static const char *const IMG_ATTRS[N_IMG_ATTRS] = {"src", "alt", "title", "data-src", "data-original",
                                                   "data-lazy-src", "srcset", "data-srcset"};
static const char *const BASE_ATTRS[1] = {"href"};
static PyObject *g_img_keys[N_IMG_ATTRS];

typedef struct {
    Py_ssize_t s, e;
    int present, has_value;
} Span;

static int name_is(const uint8_t *a, Py_ssize_t s, Py_ssize_t e, const char *name) {
    Py_ssize_t len = (Py_ssize_t)strlen(name);
    if (e - s != len) return 0;
    for (Py_ssize_t k = 0; k < len; k++) {
        uint8_t c = a[s + k];
        if (c >= 'A' && c <= 'Z') c |= 0x20;
        if (c != (uint8_t)name[k]) return 0;
    }
    return 1;
}

/* The rest of a tag whose name starts at a[p]: returns the position after its ">", or -1 when the input ends inside
 * it (the tag is then never emitted). Records in spans[k] the first attribute named want[k]. */
static Py_ssize_t tokenize_attrs(const uint8_t *a, Py_ssize_t n, Py_ssize_t p, const char *const *want, int nwant,
                                 Span *spans, int *self_closing);

static Py_ssize_t tag_name_end(const uint8_t *a, Py_ssize_t n, Py_ssize_t p) {
    while (p < n && !IS_WS(a[p]) && a[p] != '/' && a[p] != '>') p++;
    return p;
}

static Py_ssize_t tokenize_tag(const uint8_t *a, Py_ssize_t n, Py_ssize_t p, const char *const *want, int nwant,
                               Span *spans, Py_ssize_t *name_end) {
    *name_end = tag_name_end(a, n, p);
    return tokenize_attrs(a, n, *name_end, want, nwant, spans, NULL);
}

/* Byte classes for the attribute states: a bit per set of bytes that ends a run. */
enum { B_WS = 1, B_SLASH = 2, B_GT = 4, B_EQ = 8, B_DQ = 16, B_SQ = 32 };
static uint8_t g_bclass[256];
static void init_bclass(void) {
    g_bclass[' '] = g_bclass['\t'] = g_bclass['\n'] = g_bclass['\f'] = g_bclass['\r'] = B_WS;
    g_bclass['/'] = B_SLASH;
    g_bclass['>'] = B_GT;
    g_bclass['='] = B_EQ;
    g_bclass['"'] = B_DQ;
    g_bclass['\''] = B_SQ;
}

static inline Py_ssize_t skip_ws(const uint8_t *a, Py_ssize_t n, Py_ssize_t p) {
    while (p < n && (g_bclass[a[p]] & B_WS)) p++;
    return p;
}

static inline Py_ssize_t run_until(const uint8_t *a, Py_ssize_t n, Py_ssize_t p, uint8_t stop) {
    while (p < n && !(g_bclass[a[p]] & stop)) p++;
    return p;
}

/* the attributes of a tag, from just after its name (see tokenize_tag): the WHATWG attribute states.
 * *self_closing (when not NULL): the tag ended with "/>" in the self-closing start tag state. */
static Py_ssize_t tokenize_attrs(const uint8_t *a, Py_ssize_t n, Py_ssize_t p, const char *const *want, int nwant,
                                 Span *spans, int *self_closing) {
    for (int k = 0; k < nwant; k++) spans[k].present = 0;
    if (self_closing) *self_closing = 0;
    int cur = -1;
    for (;;) {
        /* before attribute name */
        p = skip_ws(a, n, p);
        if (p >= n) return -1;
        Py_ssize_t ns = p;
        uint8_t c = a[p];
        if (c != '/' && c != '>') {
            /* attribute name: the first character may be "=" */
            p = run_until(a, n, p + 1, B_WS | B_SLASH | B_GT | B_EQ);
            cur = -1;
            for (int k = 0; k < nwant; k++)
                if (!spans[k].present && name_is(a, ns, p, want[k])) {
                    spans[k].present = 1;
                    spans[k].has_value = 0;
                    cur = k;
                    break;
                }
            if (p >= n) return -1;
            /* after attribute name */
            p = skip_ws(a, n, p);
            if (p >= n) return -1;
            c = a[p];
            if (c == '=') {
                /* before attribute value */
                p = skip_ws(a, n, p + 1);
                if (p >= n) return -1;
                c = a[p];
                Py_ssize_t vs, ve;
                if (c == '"' || c == '\'') {
                    vs = p + 1;
                    ve = run_until(a, n, vs, c == '"' ? B_DQ : B_SQ);
                    if (ve >= n) return -1;
                    p = ve + 1;
                    if (cur >= 0) { spans[cur].s = vs; spans[cur].e = ve; spans[cur].has_value = 1; }
                    /* after attribute value (quoted) */
                    if (p >= n) return -1;
                    c = a[p];
                    if (c == '>') return p + 1;
                    if (c == '/') goto self_closing;
                    if (g_bclass[c] & B_WS) p++;
                    continue; /* anything else: reconsume in before attribute name */
                }
                if (c == '>') {
                    if (cur >= 0) { spans[cur].s = p; spans[cur].e = p; spans[cur].has_value = 1; }
                    return p + 1;
                }
                vs = p; /* unquoted */
                ve = run_until(a, n, p, B_WS | B_GT);
                if (ve >= n) return -1;
                if (cur >= 0) { spans[cur].s = vs; spans[cur].e = ve; spans[cur].has_value = 1; }
                if (a[ve] == '>') return ve + 1;
                p = ve + 1;
                continue;
            }
            if (c != '/' && c != '>') continue; /* the start of another attribute name */
        }
        /* "/" or ">" in the before / after attribute name states */
        if (c == '>') return p + 1;
    self_closing:
        p++; /* self-closing start tag state */
        if (p >= n) return -1;
        if (a[p] == '>') {
            if (self_closing) *self_closing = 1;
            return p + 1;
        }
        /* anything else: reconsume in before attribute name */
    }
}

/* a[p...] (just after "</") is `name` (ASCII, lower case) followed by whitespace, "/" or ">" */
static int end_name_at(const uint8_t *a, Py_ssize_t n, Py_ssize_t p, const char *name, Py_ssize_t len) {
    if (p + len >= n) return 0;
    if (!name_is(a, p, p + len, name)) return 0;
    uint8_t c = a[p + len];
    return IS_WS(c) || c == '/' || c == '>';
}

/* RCDATA / RAWTEXT content from p: position after the end tag "</name ...>", or -1 at end of input */
static Py_ssize_t skip_raw(const uint8_t *a, Py_ssize_t n, Py_ssize_t p, const char *name, Py_ssize_t len) {
    Span none[1];
    Py_ssize_t name_end;
    while (p < n) {
        const uint8_t *q = memchr(a + p, '<', (size_t)(n - p));
        if (!q) return -1;
        Py_ssize_t lt = q - a;
        if (lt + 1 < n && a[lt + 1] == '/' && end_name_at(a, n, lt + 2, name, len))
            return tokenize_tag(a, n, lt + 2, NULL, 0, none, &name_end);
        p = lt + 1;
    }
    return -1;
}

/* script data from p, with its escaped and double-escaped states: position after "</script ...>", or -1 */
static Py_ssize_t skip_script(const uint8_t *a, Py_ssize_t n, Py_ssize_t p) {
    enum { SD, ESC, ESC_DASH, ESC_DASH_DASH, DESC, DESC_DASH, DESC_DASH_DASH };
    Span none[1];
    Py_ssize_t name_end;
    int st = SD;
    while (p < n) {
        uint8_t c = a[p];
        switch (st) {
        case SD: {
            const uint8_t *q = memchr(a + p, '<', (size_t)(n - p));
            if (!q) return -1;
            p = q - a + 1; /* script data less-than sign state */
            if (p >= n) return -1;
            if (a[p] == '/') {
                if (end_name_at(a, n, p + 1, "script", 6)) return tokenize_tag(a, n, p + 1, NULL, 0, none, &name_end);
                p++;
            } else if (a[p] == '!' && p + 2 < n && a[p + 1] == '-' && a[p + 2] == '-') {
                p += 3;
                st = ESC_DASH_DASH;
            } else if (a[p] == '!') {
                p++;
            }
            break;
        }
        case ESC:
        case ESC_DASH:
        case ESC_DASH_DASH:
            if (c == '-') {
                st = st == ESC ? ESC_DASH : ESC_DASH_DASH;
                p++;
            } else if (c == '<') { /* script data escaped less-than sign state */
                p++;
                if (p >= n) return -1;
                if (a[p] == '/') {
                    if (end_name_at(a, n, p + 1, "script", 6))
                        return tokenize_tag(a, n, p + 1, NULL, 0, none, &name_end);
                    p++;
                } else if (end_name_at(a, n, p, "script", 6)) { /* double escape start */
                    p += 7;
                    st = DESC;
                    break;
                }
                st = ESC;
            } else if (c == '>' && st == ESC_DASH_DASH) {
                st = SD;
                p++;
            } else {
                st = ESC;
                p++;
            }
            break;
        case DESC:
        case DESC_DASH:
        case DESC_DASH_DASH:
            if (c == '-') {
                st = st == DESC ? DESC_DASH : DESC_DASH_DASH;
                p++;
            } else if (c == '<') { /* script data double escaped less-than sign state */
                p++;
                if (p < n && a[p] == '/') {
                    if (end_name_at(a, n, p + 1, "script", 6)) { /* double escape end */
                        p += 8;
                        st = ESC;
                        break;
                    }
                    p++;
                }
                st = DESC;
            } else if (c == '>' && st == DESC_DASH_DASH) {
                st = SD;
                p++;
            } else {
                st = DESC;
                p++;
            }
            break;
        }
    }
    return -1;
}

typedef struct {
    uint8_t *buf;
    Py_ssize_t len, cap;
} Buf;

static int buf_put(Buf *b, const uint8_t *s, Py_ssize_t len) {
    if (len <= 0) return 0;
    if (b->len + len > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len) cap *= 2;
        uint8_t *nb = PyMem_Realloc(b->buf, (size_t)cap);
        if (!nb) return -1;
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, (size_t)len);
    b->len += len;
    return 0;
}

/* text of a caption: NULs dropped (the tree builder ignores them in body text) */
static int put_text(Buf *b, const uint8_t *s, Py_ssize_t len) {
    while (len > 0) {
        const uint8_t *z = memchr(s, 0, (size_t)len);
        Py_ssize_t k = z ? z - s : len;
        if (buf_put(b, s, k) < 0) return -1;
        if (!z) break;
        s += k + 1;
        len -= k + 1;
    }
    return 0;
}

/* an attribute value as str: NUL -> U+FFFD, CRLF and CR -> LF, UTF-8 with replacement */
static PyObject *value_str(const uint8_t *s, Py_ssize_t len) {
    if (!memchr(s, 0, (size_t)len) && !memchr(s, '\r', (size_t)len))
        return PyUnicode_DecodeUTF8((const char *)s, len, "replace");
    Buf b = {0};
    for (Py_ssize_t k = 0; k < len; k++) {
        int rc;
        if (s[k] == 0) rc = buf_put(&b, (const uint8_t *)"\xef\xbf\xbd", 3);
        else if (s[k] == '\r') {
            rc = buf_put(&b, (const uint8_t *)"\n", 1);
            if (k + 1 < len && s[k + 1] == '\n') k++;
        } else rc = buf_put(&b, s + k, 1);
        if (rc < 0) {
            PyMem_Free(b.buf);
            return PyErr_NoMemory();
        }
    }
    PyObject *out = PyUnicode_DecodeUTF8((const char *)(b.buf ? b.buf : (uint8_t *)""), b.len, "replace");
    PyMem_Free(b.buf);
    return out;
}

enum { T_OTHER, T_IMG, T_BASE, T_FIGURE, T_FIGCAPTION, T_SCRIPT, T_RAW, T_PLAINTEXT, T_FOREIGN, T_VOID, T_BR };
enum { F_FIGURE = 1, F_FIGCAPTION = 2, F_ELEMENT = 3 };

/* Elements allowed inside a <figure> (besides img, figure, figcaption, void elements and raw-text elements): their
 * start tags only insert an element (no implied end tags, no p closing that could matter, no adoption agency as long
 * as they nest properly), so while every one is closed by its own end tag the tree is the token nesting. */
static const char *const FIGURE_ELEMENTS[] = {
    "a", "abbr", "address", "article", "aside", "b", "bdi", "bdo", "big", "blockquote", "center", "cite", "code",
    "data", "del", "details", "dfn", "dialog", "dir", "div", "dl", "em", "fieldset", "font", "footer", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hgroup", "i", "ins", "kbd", "label", "listing", "main", "mark", "menu", "nav",
    "noscript", "ol", "p", "picture", "pre", "q", "s", "samp", "search", "section", "small", "span", "strike",
    "strong", "sub", "summary", "sup", "time", "tt", "u", "ul", "var", NULL};

/* Start tags that close an open <p> first ("close a p element" in the tree builder). */
static const char *const CLOSES_P[] = {
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div", "dl", "fieldset",
    "figcaption", "figure", "footer", "header", "hgroup", "main", "menu", "nav", "ol", "p", "search", "section",
    "summary", "ul", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "listing", "form", "plaintext", "table", "hr", "xmp",
    NULL};

static int name_in(const uint8_t *a, Py_ssize_t s, Py_ssize_t e, const char *const *names) {
    for (int k = 0; names[k]; k++)
        if (name_is(a, s, e, names[k])) return 1;
    return 0;
}

static int is_heading(const uint8_t *a, Py_ssize_t s, Py_ssize_t e) {
    return e - s == 2 && (a[s] | 0x20) == 'h' && a[s + 1] >= '1' && a[s + 1] <= '6';
}

static int tag_kind(const uint8_t *a, Py_ssize_t s, Py_ssize_t e) {
    Py_ssize_t len = e - s;
    if (len < 2 || len > 10) return T_OTHER;
    switch (a[s] | 0x20) {
    case 'a': return name_is(a, s, e, "area") ? T_VOID : T_OTHER;
    case 'b':
        if (name_is(a, s, e, "br")) return T_BR;
        if (name_is(a, s, e, "base")) return T_BASE;
        return name_is(a, s, e, "basefont") || name_is(a, s, e, "bgsound") ? T_VOID : T_OTHER;
    case 'c': return name_is(a, s, e, "col") ? T_VOID : T_OTHER;
    case 'e': return name_is(a, s, e, "embed") ? T_VOID : T_OTHER;
    case 'f':
        if (name_is(a, s, e, "figure")) return T_FIGURE;
        if (name_is(a, s, e, "figcaption")) return T_FIGCAPTION;
        return name_is(a, s, e, "frame") ? T_VOID : T_OTHER;
    case 'h': return name_is(a, s, e, "hr") ? T_VOID : T_OTHER;
    case 'i':
        if (name_is(a, s, e, "img") || name_is(a, s, e, "image")) return T_IMG;
        if (name_is(a, s, e, "input")) return T_VOID;
        return name_is(a, s, e, "iframe") ? T_RAW : T_OTHER;
    case 'k': return name_is(a, s, e, "keygen") ? T_VOID : T_OTHER;
    case 'l': return name_is(a, s, e, "link") ? T_VOID : T_OTHER;
    case 'm':
        if (name_is(a, s, e, "meta")) return T_VOID;
        return name_is(a, s, e, "math") ? T_FOREIGN : T_OTHER;
    case 'n': return name_is(a, s, e, "noembed") || name_is(a, s, e, "noframes") ? T_RAW : T_OTHER;
    case 'p':
        if (name_is(a, s, e, "param")) return T_VOID;
        return name_is(a, s, e, "plaintext") ? T_PLAINTEXT : T_OTHER;
    case 's':
        if (name_is(a, s, e, "script")) return T_SCRIPT;
        if (name_is(a, s, e, "style")) return T_RAW;
        if (name_is(a, s, e, "source")) return T_VOID;
        return name_is(a, s, e, "svg") ? T_FOREIGN : T_OTHER;
    case 't':
        if (name_is(a, s, e, "title") || name_is(a, s, e, "textarea")) return T_RAW;
        if (name_is(a, s, e, "track")) return T_VOID;
        return name_is(a, s, e, "template") ? T_FOREIGN : T_OTHER;
    case 'w': return name_is(a, s, e, "wbr") ? T_VOID : T_OTHER;
    case 'x': return name_is(a, s, e, "xmp") ? T_RAW : T_OTHER;
    }
    return T_OTHER;
}

/* The end of the comment that starts with "<!--" at a[i]: the index of its ">", or -1 when it runs to the end of
 * the input (comment states: "<!-->", "<!--->", then the first "-->" or "--!>"). */
static Py_ssize_t comment_end(const uint8_t *a, Py_ssize_t n, Py_ssize_t i) {
    Py_ssize_t k = i + 4;
    if (k < n && a[k] == '>') return k;
    if (k + 1 < n && a[k] == '-' && a[k + 1] == '>') return k + 1;
    while (k + 2 < n) {
        const uint8_t *d = memchr(a + k, '-', (size_t)(n - k));
        if (!d) break;
        k = d - a;
        if (k + 2 < n && a[k + 1] == '-') {
            if (a[k + 2] == '>') return k + 2;
            if (a[k + 2] == '!' && k + 3 < n && a[k + 3] == '>') return k + 3;
        }
        k++;
    }
    return -1;
}

/* HTML start tags that end foreign content (the "breakout" list of the tree builder), and tags treated the same
 * way here because they could matter for extraction. */
static const char *const FOREIGN_DANGER[] = {
    "b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em", "embed", "h1", "h2",
    "h3", "h4", "h5", "h6", "head", "hr", "i", "img", "li", "listing", "menu", "meta", "nobr", "ol", "p", "pre",
    "ruby", "s", "small", "span", "strong", "strike", "sub", "sup", "table", "tt", "u", "ul", "var", "font",
    "figure", "figcaption", "base", "template", "svg", "math", "foreignobject", NULL};

static int names_equal(const uint8_t *a, Py_ssize_t s1, Py_ssize_t e1, Py_ssize_t s2, Py_ssize_t e2) {
    if (e1 - s1 != e2 - s2) return 0;
    for (Py_ssize_t k = 0; k < e1 - s1; k++) {
        uint8_t x = a[s1 + k], y = a[s2 + k];
        if (x >= 'A' && x <= 'Z') x |= 0x20;
        if (y >= 'A' && y <= 'Z') y |= 0x20;
        if (x != y) return 0;
    }
    return 1;
}

/* Inline <svg> or <math> content from p (just after the root's start tag, whose name is a[ns:ne]), tokenized as the
 * tree builder does in foreign content (no raw-text states; CDATA sections). Returns the position after the end tag
 * that closes the root, or -1 at the end of the input. Sets *bail when the content is not inert: an HTML start tag
 * that would end foreign content, anything inside an HTML/text integration point (svg title / desc, MathML mi mo
 * mn ms mtext annotation-xml), <foreignObject>, an end tag that matches no open foreign element, </p> or </br>. */
static Py_ssize_t skip_foreign(const uint8_t *a, Py_ssize_t n, Py_ssize_t p, Py_ssize_t ns, Py_ssize_t ne, int *bail) {
    enum { MAX_OPEN = 256 };
    Py_ssize_t open_s[MAX_OPEN], open_e[MAX_OPEN];
    uint8_t integ[MAX_OPEN];
    int depth = 1, in_integ = 0;
    int math = name_is(a, ns, ne, "math");
    Span none[1];
    open_s[0] = ns;
    open_e[0] = ne;
    integ[0] = 0;
    while (p < n) {
        const uint8_t *q = memchr(a + p, '<', (size_t)(n - p));
        if (!q) return -1;
        Py_ssize_t i = q - a;
        if (i + 1 >= n) return -1;
        uint8_t c1 = a[i + 1];
        if (IS_ALPHA(c1)) {
            Py_ssize_t s = i + 1, e = tag_name_end(a, n, s);
            int sc;
            Py_ssize_t after = tokenize_attrs(a, n, e, NULL, 0, none, &sc);
            if (after < 0) return -1;
            if (in_integ) { *bail = 1; return -1; }
            for (int k = 0; FOREIGN_DANGER[k]; k++)
                if (name_is(a, s, e, FOREIGN_DANGER[k])) { *bail = 1; return -1; }
            if (!sc) {
                if (depth == MAX_OPEN) { *bail = 1; return -1; }
                int ip = math ? (name_is(a, s, e, "mi") || name_is(a, s, e, "mo") || name_is(a, s, e, "mn") ||
                                 name_is(a, s, e, "ms") || name_is(a, s, e, "mtext") ||
                                 name_is(a, s, e, "annotation-xml"))
                              : (name_is(a, s, e, "title") || name_is(a, s, e, "desc"));
                open_s[depth] = s;
                open_e[depth] = e;
                integ[depth] = (uint8_t)ip;
                in_integ += ip;
                depth++;
            }
            p = after;
        } else if (c1 == '/') {
            if (i + 2 >= n) return -1;
            uint8_t c2 = a[i + 2];
            if (IS_ALPHA(c2)) {
                Py_ssize_t s = i + 2, e = tag_name_end(a, n, s);
                Py_ssize_t after = tokenize_attrs(a, n, e, NULL, 0, none, NULL);
                if (after < 0) return -1;
                if (name_is(a, s, e, "p") || name_is(a, s, e, "br")) { *bail = 1; return -1; }
                int k = depth - 1;
                while (k >= 0 && !names_equal(a, open_s[k], open_e[k], s, e)) k--;
                if (k < 0) { *bail = 1; return -1; } /* would close an HTML element outside */
                while (depth > k) in_integ -= integ[--depth];
                if (depth == 0) return after;
                p = after;
            } else if (c2 == '>') {
                p = i + 3;
            } else {
                const uint8_t *g = memchr(a + i + 2, '>', (size_t)(n - i - 2));
                if (!g) return -1;
                p = g - a + 1;
            }
        } else if (c1 == '!') {
            Py_ssize_t end;
            if (i + 3 < n && a[i + 2] == '-' && a[i + 3] == '-') {
                end = comment_end(a, n, i);
            } else if (i + 8 < n && memcmp(a + i + 2, "[CDATA[", 7) == 0) {
                end = -1;
                for (Py_ssize_t k = i + 9; k + 2 < n; k++) {
                    const uint8_t *d = memchr(a + k, ']', (size_t)(n - k));
                    if (!d) break;
                    k = d - a;
                    if (k + 2 < n && a[k + 1] == ']' && a[k + 2] == '>') { end = k + 2; break; }
                }
            } else {
                const uint8_t *g = memchr(a + i + 2, '>', (size_t)(n - i - 2));
                end = g ? g - a : -1;
            }
            if (end < 0) return -1;
            p = end + 1;
        } else if (c1 == '?') {
            const uint8_t *g = memchr(a + i + 1, '>', (size_t)(n - i - 1));
            if (!g) return -1;
            p = g - a + 1;
        } else {
            p = i + 1;
        }
    }
    return -1;
}

typedef struct {
    uint8_t *kind;   /* F_FIGURE / F_FIGCAPTION / F_ELEMENT */
    Py_ssize_t *fig; /* figure number (F_FIGURE), the figure being captioned (capturing F_FIGCAPTION) or -1,
                        the start of the element's name in the page (F_ELEMENT) */
    Py_ssize_t *aux; /* the end of the element's name (F_ELEMENT) */
    Py_ssize_t len, cap;
} Stack;

static int stack_push(Stack *st, uint8_t kind, Py_ssize_t fig, Py_ssize_t aux) {
    if (st->len == st->cap) {
        Py_ssize_t cap = st->cap ? st->cap * 2 : 32;
        uint8_t *k = PyMem_Realloc(st->kind, (size_t)cap);
        if (!k) return -1;
        st->kind = k;
        Py_ssize_t *f = PyMem_Realloc(st->fig, (size_t)cap * sizeof(Py_ssize_t));
        if (!f) return -1;
        st->fig = f;
        Py_ssize_t *x = PyMem_Realloc(st->aux, (size_t)cap * sizeof(Py_ssize_t));
        if (!x) return -1;
        st->aux = x;
        st->cap = cap;
    }
    st->kind[st->len] = kind;
    st->fig[st->len] = fig;
    st->aux[st->len] = aux;
    st->len++;
    return 0;
}

static int stack_has(const Stack *st, uint8_t kind) {
    for (Py_ssize_t k = 0; k < st->len; k++)
        if (st->kind[k] == kind) return 1;
    return 0;
}

typedef struct {
    Py_ssize_t *start, *end; /* caption byte range in the caption buffer, start -1: no <figcaption> child */
    Py_ssize_t len, cap;
} Figures;

static Py_ssize_t figures_add(Figures *f) {
    if (f->len == f->cap) {
        Py_ssize_t cap = f->cap ? f->cap * 2 : 16;
        Py_ssize_t *s = PyMem_Realloc(f->start, (size_t)cap * sizeof(Py_ssize_t));
        if (!s) return -1;
        f->start = s;
        Py_ssize_t *e = PyMem_Realloc(f->end, (size_t)cap * sizeof(Py_ssize_t));
        if (!e) return -1;
        f->end = e;
        f->cap = cap;
    }
    f->start[f->len] = -1;
    f->end[f->len] = -1;
    return f->len++;
}

static PyObject *scan_images(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t max_depth;
    if (!PyArg_ParseTuple(args, "y*n", &view, &max_depth)) return NULL;
    const uint8_t *a = (const uint8_t *)view.buf;
    const Py_ssize_t n = view.len;
    PyObject *imgs = PyList_New(0), *base_href = NULL, *result = NULL;
    Stack stack = {0};
    Figures figs = {0};
    Buf cap = {0};
    Span spans[N_IMG_ATTRS];
    Py_ssize_t capturing = -1; /* figure whose caption is being read, or -1 */
    int bail = 0, oom = 0;
    Py_ssize_t in_template = 0; /* open <template> elements: their content is not part of the document */
    if (!imgs) goto done;
#define BOUNDARY()                                                     \
    do {                                                               \
        if (capturing >= 0 && buf_put(&cap, (const uint8_t *)" ", 1) < 0) { \
            oom = 1;                                                   \
            goto finish;                                               \
        }                                                              \
    } while (0)
    Py_ssize_t i = 0;
    while (i < n) {
        const uint8_t *q = memchr(a + i, '<', (size_t)(n - i));
        Py_ssize_t lt = q ? q - a : n;
        if (capturing >= 0 && lt > i && put_text(&cap, a + i, lt - i) < 0) { oom = 1; break; }
        if (!q || lt + 1 >= n) {
            if (q && capturing >= 0 && buf_put(&cap, (const uint8_t *)"<", 1) < 0) oom = 1;
            break;
        }
        i = lt;
        uint8_t c1 = a[i + 1];
        if (IS_ALPHA(c1)) { /* start tag */
            Py_ssize_t name_end = tag_name_end(a, n, i + 1);
            int kind = tag_kind(a, i + 1, name_end);
            int self_closing;
            Py_ssize_t after = kind == T_IMG ? tokenize_attrs(a, n, name_end, IMG_ATTRS, N_IMG_ATTRS, spans, NULL)
                             : kind == T_BASE ? tokenize_attrs(a, n, name_end, BASE_ATTRS, 1, spans, NULL)
                                              : tokenize_attrs(a, n, name_end, NULL, 0, spans, &self_closing);
            if (after < 0) break; /* the input ends inside the tag: never emitted */
            int is_template = kind == T_FOREIGN && name_is(a, i + 1, name_end, "template");
            if (in_template) { /* template content: tokenized as usual, but no element of it is in the document */
                if (is_template) in_template++;
                else if (kind == T_SCRIPT || kind == T_RAW || kind == T_PLAINTEXT || kind == T_FOREIGN) goto raw_or_foreign;
                i = after;
                continue;
            }
            if (is_template) {
                if (stack.len) { bail = 1; goto finish; }
                in_template = 1;
                i = after;
                continue;
            }
            if (stack.len) { /* inside a figure: implied closes would make the tree differ from the tokens */
                int p_open = 0;
                for (Py_ssize_t k = 0; k < stack.len && !p_open; k++)
                    p_open = stack.kind[k] == F_ELEMENT && name_is(a, stack.fig[k], stack.aux[k], "p");
                if (p_open && name_in(a, i + 1, name_end, CLOSES_P)) { bail = 1; goto finish; }
                if (is_heading(a, i + 1, name_end) && stack.kind[stack.len - 1] == F_ELEMENT &&
                    is_heading(a, stack.fig[stack.len - 1], stack.aux[stack.len - 1])) { bail = 1; goto finish; }
            }
        raw_or_foreign:
            switch (kind) {
            case T_IMG: {
                Py_ssize_t fig = -1;
                for (Py_ssize_t k = stack.len - 1; k >= 0; k--)
                    if (stack.kind[k] == F_FIGURE) { fig = stack.fig[k]; break; }
                BOUNDARY();
                PyObject *attrs = PyDict_New();
                if (!attrs) goto finish;
                int amp = 0; /* a value holds "&": the caller decodes character references */
                for (int k = 0; k < N_IMG_ATTRS; k++) {
                    if (!spans[k].present) continue;
                    if (spans[k].has_value && memchr(a + spans[k].s, '&', (size_t)(spans[k].e - spans[k].s))) amp = 1;
                    PyObject *v = spans[k].has_value ? value_str(a + spans[k].s, spans[k].e - spans[k].s)
                                                     : Py_NewRef(Py_None);
                    if (!v || PyDict_SetItem(attrs, g_img_keys[k], v) < 0) {
                        Py_XDECREF(v);
                        Py_DECREF(attrs);
                        goto finish;
                    }
                    Py_DECREF(v);
                }
                PyObject *item = Py_BuildValue("(NnO)", attrs, fig, amp ? Py_True : Py_False);
                if (!item || PyList_Append(imgs, item) < 0) {
                    Py_XDECREF(item);
                    goto finish;
                }
                Py_DECREF(item);
                break;
            }
            case T_BASE:
                if (!base_href && spans[0].present && spans[0].has_value) {
                    base_href = value_str(a + spans[0].s, spans[0].e - spans[0].s);
                    if (!base_href) goto finish;
                }
                BOUNDARY();
                break;
            case T_VOID:
            case T_BR:
                BOUNDARY();
                break;
            case T_FIGURE: {
                if (stack_has(&stack, F_FIGCAPTION)) { bail = 1; goto finish; }
                Py_ssize_t fig = figures_add(&figs);
                if (fig < 0 || stack_push(&stack, F_FIGURE, fig, 0) < 0) { oom = 1; goto finish; }
                break;
            }
            case T_FIGCAPTION: {
                if (stack_has(&stack, F_FIGCAPTION)) { bail = 1; goto finish; }
                Py_ssize_t owner = -1;
                if (stack.len && stack.kind[stack.len - 1] == F_FIGURE && figs.start[stack.fig[stack.len - 1]] < 0) {
                    owner = stack.fig[stack.len - 1];
                    figs.start[owner] = cap.len;
                    figs.end[owner] = cap.len;
                    capturing = owner;
                }
                if (stack_push(&stack, F_FIGCAPTION, owner, 0) < 0) { oom = 1; goto finish; }
                break;
            }
            case T_FOREIGN: /* <svg> or <math> */
                if (capturing >= 0) { bail = 1; goto finish; }
                if (!self_closing) { /* inline <svg> / <math>: skipped when inert, else handed to Lexbor */
                    int foreign_bail = 0;
                    after = skip_foreign(a, n, after, i + 1, name_end, &foreign_bail);
                    if (foreign_bail) { bail = 1; goto finish; }
                }
                break;
            default: /* T_OTHER, T_SCRIPT, T_RAW, T_PLAINTEXT */
                if (stack.len) { /* inside a figure: only elements that keep the tree equal to the token nesting */
                    if (kind == T_OTHER) {
                        if (!name_in(a, i + 1, name_end, FIGURE_ELEMENTS)) { bail = 1; goto finish; }
                        /* a second <a> inside an open one runs the adoption agency */
                        if (name_is(a, i + 1, name_end, "a"))
                            for (Py_ssize_t k = 0; k < stack.len; k++)
                                if (stack.kind[k] == F_ELEMENT && name_is(a, stack.fig[k], stack.aux[k], "a")) {
                                    bail = 1;
                                    goto finish;
                                }
                        BOUNDARY();
                        if (stack_push(&stack, F_ELEMENT, i + 1, name_end) < 0) { oom = 1; goto finish; }
                        break;
                    }
                    if (capturing >= 0 || kind == T_PLAINTEXT) { bail = 1; goto finish; }
                }
                if (kind == T_SCRIPT) {
                    after = skip_script(a, n, after);
                } else if (kind == T_RAW) { /* content up to the matching end tag is text */
                    char name[12];
                    Py_ssize_t len = name_end - (i + 1);
                    for (Py_ssize_t k = 0; k < len; k++) name[k] = (char)(a[i + 1 + k] | 0x20);
                    name[len] = 0;
                    after = skip_raw(a, n, after, name, len);
                } else if (kind == T_PLAINTEXT) {
                    after = -1; /* the rest of the page is text */
                }
                break;
            }
            if (after < 0) break;
            i = after;
            if (stack.len > (max_depth < 0 ? PY_SSIZE_T_MAX : max_depth)) { bail = 1; goto finish; }
        } else if (c1 == '/') {
            if (i + 2 >= n) {
                if (capturing >= 0 && buf_put(&cap, (const uint8_t *)"</", 2) < 0) oom = 1;
                break;
            }
            uint8_t c2 = a[i + 2];
            if (IS_ALPHA(c2)) { /* end tag */
                Py_ssize_t name_end;
                Py_ssize_t after = tokenize_tag(a, n, i + 2, NULL, 0, spans, &name_end);
                if (after < 0) break;
                int kind = tag_kind(a, i + 2, name_end);
                if (in_template) {
                    if (name_is(a, i + 2, name_end, "template")) in_template--;
                } else if (kind == T_FIGURE || kind == T_FIGCAPTION) {
                    uint8_t want = kind == T_FIGURE ? F_FIGURE : F_FIGCAPTION;
                    Py_ssize_t k = stack.len - 1;
                    while (k >= 0 && stack.kind[k] != want) {
                        /* it would close an element left open inside the figure: general tree building */
                        if (stack.kind[k] == F_ELEMENT) { bail = 1; goto finish; }
                        k--;
                    }
                    if (k >= 0) { /* in scope: pop up to and including it */
                        for (Py_ssize_t m = stack.len - 1; m >= k; m--) {
                            if (stack.kind[m] == F_FIGCAPTION && stack.fig[m] >= 0) {
                                figs.end[stack.fig[m]] = cap.len;
                                capturing = -1;
                            }
                        }
                        stack.len = k;
                        if (capturing >= 0) BOUNDARY(); /* cannot happen: captions do not nest */
                    }
                } else if (kind == T_BR) {
                    BOUNDARY();
                } else if (stack.len && stack.kind[stack.len - 1] == F_ELEMENT &&
                           names_equal(a, stack.fig[stack.len - 1], stack.aux[stack.len - 1], i + 2, name_end)) {
                    stack.len--; /* the element's own end tag */
                    BOUNDARY();
                } else if (stack.len) {
                    bail = 1;
                    goto finish;
                }
                i = after;
            } else if (c2 == '>') {
                i += 3; /* "</>": nothing */
            } else { /* bogus comment */
                const uint8_t *g = memchr(a + i + 2, '>', (size_t)(n - i - 2));
                BOUNDARY();
                if (!g) break;
                i = g - a + 1;
            }
        } else if (c1 == '!') {
            Py_ssize_t end;
            if (i + 3 < n && a[i + 2] == '-' && a[i + 3] == '-') { /* comment */
                end = comment_end(a, n, i);
                BOUNDARY();
            } else {
                int doctype = i + 8 < n && name_is(a, i + 2, i + 9, "doctype");
                const uint8_t *g = memchr(a + i + 2, '>', (size_t)(n - i - 2));
                end = g ? g - a : -1;
                if (!doctype) BOUNDARY(); /* a bogus comment is a node; a doctype in body is ignored */
            }
            if (end < 0) break;
            i = end + 1;
        } else if (c1 == '?') {
            const uint8_t *g = memchr(a + i + 1, '>', (size_t)(n - i - 1));
            BOUNDARY();
            if (!g) break;
            i = g - a + 1;
        } else {
            if (capturing >= 0 && buf_put(&cap, (const uint8_t *)"<", 1) < 0) { oom = 1; break; }
            i += 1;
        }
    }
finish:
    if (PyErr_Occurred()) goto done;
    if (oom) {
        PyErr_NoMemory();
        goto done;
    }
    if (bail) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (Py_ssize_t m = stack.len - 1; m >= 0; m--) /* unclosed at the end of the page */
        if (stack.kind[m] == F_FIGCAPTION && stack.fig[m] >= 0) figs.end[stack.fig[m]] = cap.len;
    PyObject *captions = PyList_New(figs.len);
    if (!captions) goto done;
    for (Py_ssize_t f = 0; f < figs.len; f++) {
        PyObject *c;
        if (figs.start[f] < 0) c = Py_NewRef(Py_None);
        else c = PyUnicode_DecodeUTF8((const char *)(cap.buf ? cap.buf + figs.start[f] : (uint8_t *)""),
                                      figs.end[f] - figs.start[f], "replace");
        if (!c) {
            Py_DECREF(captions);
            goto done;
        }
        PyList_SET_ITEM(captions, f, c);
    }
    result = Py_BuildValue("(OON)", base_href ? base_href : Py_None, imgs, captions);
#undef BOUNDARY
done:
    Py_XDECREF(imgs);
    Py_XDECREF(base_href);
    PyMem_Free(stack.kind);
    PyMem_Free(stack.fig);
    PyMem_Free(stack.aux);
    PyMem_Free(figs.start);
    PyMem_Free(figs.end);
    PyMem_Free(cap.buf);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"set_tables", set_tables, METH_VARARGS, "Install the kept-tag hash table (codes, classes, mult, shift)."},
    {"skeleton", skeleton, METH_VARARGS,
     "skeleton(html, max_depth) -> (bytes, cut_at | None, depth, has_figcaption, has_base); max_depth < 0: no guard."},
    {"scan_images", scan_images, METH_VARARGS,
     "scan_images(html, max_depth) -> (base_href, [(attrs, figure_no, has_amp)], captions) | None; see _html.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_html", "Compiled HTML helpers for extraction (see danqing_assets/lib/html.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__html(void) {
    init_bclass();
    for (int k = 0; k < N_IMG_ATTRS; k++) {
        g_img_keys[k] = PyUnicode_InternFromString(IMG_ATTRS[k]);
        if (!g_img_keys[k]) return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    /* bumped with every change of what the functions take or return: html.py refuses a stale build */
    if (m && PyModule_AddIntConstant(m, "API_VERSION", 3) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
