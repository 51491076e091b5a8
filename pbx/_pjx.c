/* ponte's own pjmedia media port (pjproject 2.12.1 has no AudioMediaPort).
 *
 * A MediaPort is a pjmedia_port on pjsua's conference bridge whose audio
 * comes from, and goes to, Python in whole frames:
 *
 *   push(frame)  Python -> ring "in"  -> get_frame() -> the bridge
 *   pull()       Python <- ring "out" <- put_frame() <- the bridge
 *
 * get_frame/put_frame run on pjmedia's clock thread every ptime. They only
 * copy one frame under a plain pthread mutex: no GIL, no Python, no pj_*
 * call, so the media clock never waits for the interpreter. push/pull copy
 * one frame per call (never byte by byte) and may be called from any
 * thread, since they touch no pjsua state either.
 *
 * Creating and closing a port calls pjsua and must happen on the thread
 * that owns the pjsua2 Endpoint (pbx/sipua.py's).
 *
 * The pj* symbols come from _pjsua2, which pbx/sipua.py loads RTLD_GLOBAL
 * before importing this module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include <pjsua-lib/pjsua.h>
#include <pjmedia-codec/opus.h>
/* pjsua_get_var(): the calls' dialogs, for the screen's Call-ID check. The
 * module is always compiled against the headers of the very build it loads
 * into (scripts/build-pjx), so the internal layout matches. */
#include <pjsua-lib/pjsua_internal.h>

#define SIGNATURE PJMEDIA_SIG_CLASS_PORT_AUD('P', 'X')

/* A ring of fixed-size frames. When full, the oldest frame is dropped:
 * latency stays bounded by the depth instead of growing with clock drift. */
typedef struct {
    pj_int16_t *buf;
    unsigned depth;   /* frames */
    unsigned head;    /* index of the oldest frame */
    unsigned count;   /* frames held */
    unsigned long dropped;
} ring_t;

typedef struct {
    pjmedia_port base; /* first: pjmedia hands us back this pointer */
    pj_pool_t *pool;   /* owns the bridge's bookkeeping for this port */
    pthread_mutex_t lock;
    unsigned samples;  /* per frame */
    ring_t in, out;
    unsigned long underruns; /* get_frame found nothing to give */
    unsigned long frames_in, frames_out;
    int slot;
    /* A recorder's port: a tick on which the bridge sends no audio (nobody
     * connected, or every source silent) still yields a zero frame, so the
     * frames pulled are the bridge's clock, one per ptime, with no gaps. */
    int keep_silence;
    pj_int16_t *zeros;
} xport_t;

static int ring_init(ring_t *r, unsigned depth, unsigned samples)
{
    r->buf = calloc((size_t)depth * samples, sizeof(pj_int16_t));
    r->depth = depth;
    r->head = r->count = 0;
    r->dropped = 0;
    return r->buf != NULL;
}

static void ring_put(ring_t *r, unsigned samples, const void *frame)
{
    if (r->count == r->depth) { /* full: forget the oldest */
        r->head = (r->head + 1) % r->depth;
        r->count--;
        r->dropped++;
    }
    unsigned tail = (r->head + r->count) % r->depth;
    memcpy(r->buf + (size_t)tail * samples, frame, samples * sizeof(pj_int16_t));
    r->count++;
}

static int ring_get(ring_t *r, unsigned samples, void *frame)
{
    if (r->count == 0)
        return 0;
    memcpy(frame, r->buf + (size_t)r->head * samples, samples * sizeof(pj_int16_t));
    r->head = (r->head + 1) % r->depth;
    r->count--;
    return 1;
}

/* The bridge wants the next frame this port sends into the conference. */
static pj_status_t xport_get_frame(pjmedia_port *this_port, pjmedia_frame *frame)
{
    xport_t *p = (xport_t *)this_port;
    int got;
    pthread_mutex_lock(&p->lock);
    got = ring_get(&p->in, p->samples, frame->buf);
    if (!got)
        p->underruns++;
    pthread_mutex_unlock(&p->lock);
    if (got) {
        frame->type = PJMEDIA_FRAME_TYPE_AUDIO;
        frame->size = p->samples * sizeof(pj_int16_t);
    } else {
        frame->type = PJMEDIA_FRAME_TYPE_NONE;
        frame->size = 0;
    }
    return PJ_SUCCESS;
}

/* The bridge delivers what this port's member hears. */
static pj_status_t xport_put_frame(pjmedia_port *this_port, pjmedia_frame *frame)
{
    xport_t *p = (xport_t *)this_port;
    const void *buf = frame->buf;
    if (frame->type != PJMEDIA_FRAME_TYPE_AUDIO ||
        frame->size != p->samples * sizeof(pj_int16_t)) {
        if (!p->keep_silence)
            return PJ_SUCCESS;
        buf = p->zeros;
    }
    pthread_mutex_lock(&p->lock);
    ring_put(&p->out, p->samples, buf);
    p->frames_out++;
    pthread_mutex_unlock(&p->lock);
    return PJ_SUCCESS;
}

static pj_status_t xport_on_destroy(pjmedia_port *this_port)
{
    (void)this_port;
    return PJ_SUCCESS;
}

/* ---- the Python type ------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    xport_t *port; /* NULL once closed */
    unsigned frame_bytes;
} MediaPortObject;

static void xport_free(xport_t *p)
{
    pthread_mutex_destroy(&p->lock);
    free(p->in.buf);
    free(p->out.buf);
    free(p->zeros);
    free(p);
}

static int MediaPort_init(MediaPortObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"clock_rate", "ptime_ms", "depth", "name", "keep_silence", NULL};
    unsigned clock_rate = 8000, ptime = 20, depth = 8;
    int keep_silence = 0;
    const char *name = "ponte-port";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|IIIsp", kwlist, &clock_rate, &ptime,
                                     &depth, &name, &keep_silence))
        return -1;
    if (self->port != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "MediaPort already initialised");
        return -1;
    }
    if (clock_rate < 8000 || clock_rate > 48000 || ptime < 10 || ptime > 60 || depth < 2 ||
        depth > 250) {
        PyErr_SetString(PyExc_ValueError, "clock_rate 8000-48000, ptime_ms 10-60, depth 2-250");
        return -1;
    }
    if (pjsua_get_state() != PJSUA_STATE_RUNNING) {
        PyErr_SetString(PyExc_RuntimeError, "pjsua is not running");
        return -1;
    }
    if (!pj_thread_is_registered()) {
        PyErr_SetString(PyExc_RuntimeError, "MediaPort must be created on the pjsua thread");
        return -1;
    }
    xport_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->samples = clock_rate * ptime / 1000;
    p->keep_silence = keep_silence;
    p->zeros = calloc(p->samples, sizeof(pj_int16_t));
    if (p->zeros == NULL || !ring_init(&p->in, depth, p->samples) ||
        !ring_init(&p->out, depth, p->samples)) {
        free(p->zeros);
        free(p->in.buf);
        free(p->out.buf);
        free(p);
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&p->lock, NULL);
    p->pool = pjsua_pool_create("ponteport", 1024, 1024);
    if (p->pool == NULL) {
        xport_free(p);
        PyErr_NoMemory();
        return -1;
    }
    pj_str_t pjname;
    pj_strdup2_with_null(p->pool, &pjname, name);
    pjmedia_port_info_init(&p->base.info, &pjname, SIGNATURE, clock_rate, 1, 16, p->samples);
    p->base.get_frame = &xport_get_frame;
    p->base.put_frame = &xport_put_frame;
    p->base.on_destroy = &xport_on_destroy;
    int slot = -1;
    pj_status_t st = pjsua_conf_add_port(p->pool, &p->base, &slot);
    if (st != PJ_SUCCESS) {
        pj_pool_release(p->pool);
        xport_free(p);
        PyErr_Format(PyExc_RuntimeError, "pjsua_conf_add_port failed (status %d)", (int)st);
        return -1;
    }
    p->slot = slot;
    self->port = p;
    self->frame_bytes = p->samples * sizeof(pj_int16_t);
    return 0;
}

static PyObject *MediaPort_close(MediaPortObject *self, PyObject *Py_UNUSED(ignored))
{
    xport_t *p = self->port;
    if (p == NULL)
        Py_RETURN_NONE;
    if (!pj_thread_is_registered()) {
        PyErr_SetString(PyExc_RuntimeError, "MediaPort must be closed on the pjsua thread");
        return NULL;
    }
    self->port = NULL;
    /* In 2.12 the removal takes the bridge's mutex, which the clock thread
     * holds while calling get/put_frame: once it returns, no callback is
     * running or will run, and the memory can go. */
    pjsua_conf_remove_port(p->slot);
    pj_pool_release(p->pool);
    xport_free(p);
    Py_RETURN_NONE;
}

static void MediaPort_dealloc(MediaPortObject *self)
{
    /* Not closed: the bridge may still call into the port, and this may not
     * be the pjsua thread, so the port is left alive (leaked) rather than
     * freed under the clock thread. pbx/sipua.py always closes its ports. */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static xport_t *open_port(MediaPortObject *self)
{
    if (self->port == NULL)
        PyErr_SetString(PyExc_ValueError, "MediaPort is closed");
    return self->port;
}

static PyObject *MediaPort_push(MediaPortObject *self, PyObject *arg)
{
    xport_t *p = open_port(self);
    if (p == NULL)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((size_t)view.len != self->frame_bytes) {
        PyErr_Format(PyExc_ValueError, "a frame is %u bytes, not %zd", self->frame_bytes,
                     view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    pthread_mutex_lock(&p->lock);
    ring_put(&p->in, p->samples, view.buf);
    p->frames_in++;
    pthread_mutex_unlock(&p->lock);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *MediaPort_pull(MediaPortObject *self, PyObject *Py_UNUSED(ignored))
{
    xport_t *p = open_port(self);
    if (p == NULL)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, self->frame_bytes);
    if (out == NULL)
        return NULL;
    pthread_mutex_lock(&p->lock);
    int got = ring_get(&p->out, p->samples, PyBytes_AS_STRING(out));
    pthread_mutex_unlock(&p->lock);
    if (!got) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyObject *MediaPort_stats(MediaPortObject *self, PyObject *Py_UNUSED(ignored))
{
    xport_t *p = open_port(self);
    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->lock);
    PyObject *d = Py_BuildValue(
        "{s:k,s:k,s:k,s:k,s:k,s:I,s:I}", "frames_in", p->frames_in, "frames_out",
        p->frames_out, "underruns", p->underruns, "dropped_in", p->in.dropped, "dropped_out",
        p->out.dropped, "queued_in", p->in.count, "queued_out", p->out.count);
    pthread_mutex_unlock(&p->lock);
    return d;
}

static PyObject *MediaPort_get_slot(MediaPortObject *self, void *closure)
{
    (void)closure;
    if (self->port == NULL)
        return PyLong_FromLong(-1);
    return PyLong_FromLong(self->port->slot);
}

static PyObject *MediaPort_get_frame_bytes(MediaPortObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLong(self->frame_bytes);
}

static PyMethodDef MediaPort_methods[] = {
    {"push", (PyCFunction)MediaPort_push, METH_O,
     "push(frame): queue one frame (bytes-like, s16le mono) for the bridge."},
    {"pull", (PyCFunction)MediaPort_pull, METH_NOARGS,
     "pull() -> bytes | None: the oldest frame the bridge delivered, if any."},
    {"close", (PyCFunction)MediaPort_close, METH_NOARGS,
     "close(): remove the port from the bridge (pjsua thread only)."},
    {"stats", (PyCFunction)MediaPort_stats, METH_NOARGS,
     "stats() -> dict of frame counters (underruns, drops, queue depths)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef MediaPort_getset[] = {
    {"slot", (getter)MediaPort_get_slot, NULL, "conference slot (-1 once closed)", NULL},
    {"frame_bytes", (getter)MediaPort_get_frame_bytes, NULL, "bytes per frame", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MediaPortType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pbx._pjx.MediaPort",
    .tp_doc = "A conference-bridge port fed and drained by Python, one frame per call.",
    .tp_basicsize = sizeof(MediaPortObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)MediaPort_init,
    .tp_dealloc = (destructor)MediaPort_dealloc,
    .tp_methods = MediaPort_methods,
    .tp_getset = MediaPort_getset,
};

/* ---- conference helpers ---------------------------------------------- */

static PyObject *signal_level(PyObject *mod, PyObject *arg)
{
    (void)mod;
    long slot = PyLong_AsLong(arg);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    unsigned tx = 0, rx = 0;
    pj_status_t st = pjsua_conf_get_signal_level((pjsua_conf_port_id)slot, &tx, &rx);
    if (st != PJ_SUCCESS) {
        PyErr_Format(PyExc_ValueError, "no conference port %ld", slot);
        return NULL;
    }
    /* tx: what the bridge sends to the port; rx: what the port sends in. */
    return Py_BuildValue("(II)", tx, rx);
}

/* ---- Opus encoder settings -------------------------------------------- */

/* pjsua2's Endpoint::setCodecOpusConfig is compiled in, but SWIG did not see
 * PJMEDIA_HAS_OPUS_CODEC and left it out of the Python module: set pjmedia's
 * module-wide Opus config here (read when each leg's codec opens). */
static PyObject *set_opus_config(PyObject *mod, PyObject *args)
{
    (void)mod;
    unsigned rate, bitrate, complexity;
    int cbr;
    if (!PyArg_ParseTuple(args, "IIIp", &rate, &bitrate, &complexity, &cbr))
        return NULL;
    pjmedia_codec_opus_config cfg;
    pjmedia_codec_param param;
    pj_str_t opus = pj_str("opus");
    pj_status_t st = pjmedia_codec_opus_get_config(&cfg);
    if (st == PJ_SUCCESS)
        st = pjsua_codec_get_param(&opus, &param);
    if (st != PJ_SUCCESS) {
        PyErr_Format(PyExc_RuntimeError, "no opus codec in this build (status %d)", (int)st);
        return NULL;
    }
    cfg.sample_rate = rate;
    cfg.channel_cnt = 1;
    cfg.frm_ptime = 20;
    cfg.bit_rate = bitrate;
    cfg.complexity = complexity;
    cfg.cbr = cbr ? PJ_TRUE : PJ_FALSE;
    st = pjmedia_codec_opus_set_default_param(&cfg, &param);
    if (st != PJ_SUCCESS) {
        PyErr_Format(PyExc_ValueError, "opus config refused (status %d)", (int)st);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Talkers and listeners (our pjproject patch 0008): a member whose level
 * stays under `level` (mean absolute sample, 0-32767) for longer than
 * `hangover_ms` is mixed to nobody. Level 0: every member is mixed. */
static PyObject *set_talker_gate(PyObject *mod, PyObject *args)
{
    (void)mod;
    unsigned level = 0, hangover_ms = 0;
    if (!PyArg_ParseTuple(args, "II", &level, &hangover_ms))
        return NULL;
    pjmedia_conf *conf = pjsua_get_var()->mconf;
    if (conf == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_talker_gate needs pjsua's bridge (after libInit)");
        return NULL;
    }
    if (pjmedia_conf_set_talker_gate(conf, level, hangover_ms) != PJ_SUCCESS) {
        PyErr_Format(PyExc_ValueError, "talker gate level %u is not 0-32767", level);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Encode once per listener group (our pjproject patches 0009, 0011) on or
 * off: off, every leg encodes its own frames (to measure what sharing saves
 * on the same binary, or should a codec misbehave). */
static PyObject *set_shared_encode(PyObject *mod, PyObject *arg)
{
    (void)mod;
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    pjmedia_stream_set_shared_encode(on ? PJ_TRUE : PJ_FALSE);
    Py_RETURN_NONE;
}

/* The receive jitter buffer's discard algorithm of legs opened from now on
 * (our pjproject patch 0016): a pjmedia_jb_discard_algo (0 none, 1 static,
 * 2 progressive), or -1 for pjsua's (progressive). */
static PyObject *set_jb_discard(PyObject *mod, PyObject *arg)
{
    (void)mod;
    long algo = PyLong_AsLong(arg);
    if (algo == -1 && PyErr_Occurred())
        return NULL;
    if (algo < -1 || algo > PJMEDIA_JB_DISCARD_PROGRESSIVE) {
        PyErr_Format(PyExc_ValueError, "jitter buffer discard algorithm %ld is not -1-2", algo);
        return NULL;
    }
    pjmedia_stream_set_jb_discard((int)algo);
    Py_RETURN_NONE;
}

/* Encode once per listener group (our pjproject patch 0009): frames sent
 * with a payload another stream of the group encoded, and group encodes. */
static PyObject *shared_encode_stats(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    (void)mod;
    unsigned long hits = 0, encodes = 0;
    pjmedia_stream_shared_encode_stats(&hits, &encodes);
    return Py_BuildValue("{s:k,s:k}", "shared", hits, "encoded", encodes);
}


/* ---- SIP screen --------------------------------------------------------
 *
 * Kamailio screens everything from the network, but the app server must not
 * accept what RFC 3261 forbids if a request reaches it another way. pjsip
 * 2.12.1 is lenient: it answers some RFC 4475 invalid requests 200 OK. This
 * module sits between the transport and the transaction layer and refuses
 * them with a stateless 400 (an invalid ACK is just dropped). Each rule is
 * one row of SCREEN_RULES below; the syntax checks read the raw datagram.
 *
 * Three more rows are about what a valid request may do here:
 *
 *   dialog    RFC 3261 12.2.2: an in-dialog request belongs to the dialog
 *             whose Call-ID, local tag and remote tag it carries. pjsip's UA
 *             layer looks a dialog up by the two tags alone, so a BYE with a
 *             live call's tags and any Call-ID ended that call: 481 when the
 *             To tag is a call's and the Call-ID is not (pjsip itself answers
 *             481 to unknown tags).
 *   refer     pjsua follows a REFER by placing the call itself (no routing
 *             decision of ours, no history), and pjsua2 gives that call our
 *             Call object too: when one of the two calls ended, the object
 *             was freed under the other one (a segfault). The app server
 *             never transfers: 403. (pbx/sipua.py refuses it too.)
 *   replaces  an INVITE with Replaces is answered by pjsua itself and never
 *             reaches our incoming-call handler: 403, for the same reason.
 */

typedef struct {
    const char *text; /* the datagram */
    size_t len;       /* its length */
    size_t hdr_end;   /* offset of the blank line (CRLFCRLF) */
    const char *line; /* the request line */
    size_t line_len;
} raw_msg_t;

/* Single-value headers: their long and compact names. */
static const char *const SINGLE_HEADERS[][2] = {
    {"To", "t"},       {"From", "f"},           {"Call-ID", "i"}, {"CSeq", NULL},
    {"Max-Forwards", NULL}, {"Content-Length", "l"}, {"Content-Type", "c"},
};
#define N_SINGLE (sizeof(SINGLE_HEADERS) / sizeof(SINGLE_HEADERS[0]))

static int is_lws(char c) { return c == ' ' || c == '\t'; }

static int is_token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("-.!%*_+`'~", c) != NULL);
}

/* Calls fn(name, name_len, value, value_len) for each header line (a folded
 * continuation belongs to the line before it). Stops when fn returns non-0. */
typedef int (*header_fn)(const char *, size_t, const char *, size_t, void *);

static int each_header(const raw_msg_t *m, header_fn fn, void *arg)
{
    size_t pos = m->line_len + 2;
    while (pos < m->hdr_end) {
        size_t start = pos, end = pos;
        for (;;) { /* the logical line's end, across folds */
            while (end + 1 < m->hdr_end + 2 && !(m->text[end] == '\r' && m->text[end + 1] == '\n'))
                end++;
            if (end + 2 < m->hdr_end && is_lws(m->text[end + 2])) {
                end += 2;
                continue;
            }
            break;
        }
        const char *colon = memchr(m->text + start, ':', end - start);
        if (colon != NULL) {
            size_t nlen = (size_t)(colon - (m->text + start));
            while (nlen > 0 && is_lws(m->text[start + nlen - 1]))
                nlen--;
            const char *v = colon + 1;
            while (v < m->text + end && is_lws(*v))
                v++;
            int r = fn(m->text + start, nlen, v, (size_t)(m->text + end - v), arg);
            if (r)
                return r;
        }
        pos = end + 2;
    }
    return 0;
}

static int name_is(const char *n, size_t nlen, const char *want)
{
    return want != NULL && strlen(want) == nlen && strncasecmp(n, want, nlen) == 0;
}

struct dup_state { unsigned counts[N_SINGLE]; };

static int count_single(const char *n, size_t nlen, const char *v, size_t vlen, void *arg)
{
    struct dup_state *st = arg;
    for (size_t i = 0; i < N_SINGLE; i++)
        if (name_is(n, nlen, SINGLE_HEADERS[i][0]) || name_is(n, nlen, SINGLE_HEADERS[i][1]))
            st->counts[i]++;
    return 0;
}

/* 3.3.8, 3.3.9: a single-value header given more than once. */
static int rule_duplicate_header(const raw_msg_t *m, pjsip_rx_data *rd)
{
    struct dup_state st;
    memset(&st, 0, sizeof(st));
    each_header(m, count_single, &st);
    for (size_t i = 0; i < N_SINGLE; i++)
        if (st.counts[i] > 1)
            return 1;
    return 0;
}

/* 3.1.2.10: anything after "SIP/2.0" on the request line. */
static int rule_request_line_tail(const raw_msg_t *m, pjsip_rx_data *rd)
{
    return m->line_len < 7 || memcmp(m->line + m->line_len - 7, "SIP/2.0", 7) != 0;
}

/* 3.1.2.11: a Request-URI never carries ?headers (RFC 3261 19.1.1). */
static int rule_ruri_headers(const raw_msg_t *m, pjsip_rx_data *rd)
{
    const char *sp1 = memchr(m->line, ' ', m->line_len);
    if (sp1 == NULL)
        return 0;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(m->line + m->line_len - sp1 - 1));
    if (sp2 == NULL)
        return 0;
    /* A '?' in the user part is legal (user-unreserved, 3.1.1.2): only one
     * after the host starts headers. */
    const char *host = sp1 + 1;
    for (const char *c = sp1 + 1; c < sp2; c++)
        if (*c == '@')
            host = c + 1;
    return memchr(host, '?', (size_t)(sp2 - host)) != NULL;
}

static int check_date(const char *n, size_t nlen, const char *v, size_t vlen, void *arg)
{
    if (!name_is(n, nlen, "Date"))
        return 0;
    while (vlen > 0 && is_lws(v[vlen - 1]))
        vlen--;
    return vlen < 4 || memcmp(v + vlen - 4, " GMT", 4) != 0;
}

/* 3.1.2.12: an HTTP-date is always in GMT. */
static int rule_date_gmt(const raw_msg_t *m, pjsip_rx_data *rd)
{
    return each_header(m, check_date, NULL);
}

/* From/To: an unquoted display name holds only tokens and LWS (3.1.2.15),
 * and nothing may stand between < > and the addr-spec (3.1.2.14). */
static int check_name_addr(const char *n, size_t nlen, const char *v, size_t vlen, void *arg)
{
    if (!(name_is(n, nlen, "From") || name_is(n, nlen, "f") || name_is(n, nlen, "To") ||
          name_is(n, nlen, "t")))
        return 0;
    size_t i = 0;
    if (i < vlen && v[i] == '"') { /* quoted display name */
        for (i++; i < vlen && v[i] != '"'; i++)
            if (v[i] == '\\')
                i++;
        if (i >= vlen)
            return 1; /* unterminated */
        i++;
    } else {
        const char *lt = memchr(v, '<', vlen);
        if (lt == NULL)
            return 0; /* a bare addr-spec */
        for (; v + i < lt; i++)
            if (!is_token_char((unsigned char)v[i]) && !is_lws(v[i]))
                return 1;
    }
    while (i < vlen && is_lws(v[i]))
        i++;
    if (i >= vlen || v[i] != '<')
        return 0;
    const char *gt = memchr(v + i, '>', vlen - i);
    if (gt == NULL)
        return 1;
    return is_lws(v[i + 1]) || is_lws(gt[-1]);
}

static int rule_name_addr(const raw_msg_t *m, pjsip_rx_data *rd)
{
    return each_header(m, check_name_addr, NULL);
}

struct cseq_state { const raw_msg_t *m; };

static int check_cseq(const char *n, size_t nlen, const char *v, size_t vlen, void *arg)
{
    const raw_msg_t *m = ((struct cseq_state *)arg)->m;
    if (!name_is(n, nlen, "CSeq"))
        return 0;
    size_t i = 0;
    while (i < vlen && !is_lws(v[i]))
        i++;
    while (i < vlen && is_lws(v[i]))
        i++;
    size_t j = i;
    while (j < vlen && !is_lws(v[j]))
        j++;
    const char *sp = memchr(m->line, ' ', m->line_len);
    size_t mlen = sp ? (size_t)(sp - m->line) : 0;
    return mlen != j - i || memcmp(m->line, v + i, mlen) != 0;
}

/* 3.1.2.17: the CSeq method is the request's method. */
static int rule_cseq_method(const raw_msg_t *m, pjsip_rx_data *rd)
{
    struct cseq_state st = {m};
    return each_header(m, check_cseq, &st);
}

static int check_clen(const char *n, size_t nlen, const char *v, size_t vlen, void *arg)
{
    const raw_msg_t *m = arg;
    if (!(name_is(n, nlen, "Content-Length") || name_is(n, nlen, "l")))
        return 0;
    unsigned long want = 0;
    for (size_t i = 0; i < vlen && v[i] >= '0' && v[i] <= '9'; i++) {
        want = want * 10 + (unsigned long)(v[i] - '0');
        if (want > m->len)
            return 1;
    }
    return want > m->len - (m->hdr_end + 4);
}

/* 3.1.2.2: a datagram shorter than its Content-Length is truncated (octets
 * beyond it are ignored, 3.1.1.8, so only "too long" is refused). */
static int rule_content_length(const raw_msg_t *m, pjsip_rx_data *rd)
{
    return each_header(m, check_clen, (void *)m);
}

/* The dialog of the pjsua call whose local tag is `tag`, if any. Every
 * dialog of the app server is a call's (it never subscribes, and REFER is
 * refused), so this sees what pjsip's UA layer would pick for a request. */
static const pjsip_dialog *call_dialog_by_local_tag(const pj_str_t *tag)
{
    pjsua_call_id ids[PJSUA_MAX_CALLS];
    unsigned count = PJ_ARRAY_SIZE(ids);
    if (pjsua_enum_calls(ids, &count) != PJ_SUCCESS)
        return NULL;
    const struct pjsua_data *var = pjsua_get_var();
    for (unsigned i = 0; i < count; i++) {
        const pjsua_call *call = &var->calls[ids[i]];
        const pjsip_dialog *dlg = call->inv != NULL ? call->inv->dlg : call->async_call.dlg;
        /* pjsip files dialogs by local tag, case-insensitively (its hash). */
        if (dlg != NULL && dlg->local.info != NULL &&
            pj_stricmp(&dlg->local.info->tag, tag) == 0)
            return dlg;
    }
    return NULL;
}

/* An in-dialog request whose To tag is one of our calls' local tags but
 * whose Call-ID is not that call's (see "dialog" above). pjsip's UA layer
 * finds the dialog by the To tag, then the From tag, and never compares the
 * Call-ID: only this case is pjsip's mistake, so only this case is ours.
 * An unknown To tag or a wrong From tag is left to pjsip, which answers
 * 481 itself; a CANCEL is matched by its INVITE's transaction, and a
 * REGISTER may carry tags. */
static int rule_wrong_call_id(const raw_msg_t *m, pjsip_rx_data *rd)
{
    pjsip_method_e id = rd->msg_info.msg->line.req.method.id;
    if (rd->msg_info.to == NULL || rd->msg_info.to->tag.slen == 0 ||
        rd->msg_info.cid == NULL || id == PJSIP_CANCEL_METHOD || id == PJSIP_REGISTER_METHOD)
        return 0;
    const pjsip_dialog *dlg = call_dialog_by_local_tag(&rd->msg_info.to->tag);
    /* Call-IDs compare case-sensitively (RFC 3261 19.3, and pjsip). */
    return dlg != NULL && pj_strcmp(&dlg->call_id->id, &rd->msg_info.cid->id) != 0;
}

/* REFER, in a dialog or out of one (see "refer" above). Method names are
 * case-sensitive: "refer" is some other, unknown method. */
static int rule_refer(const raw_msg_t *m, pjsip_rx_data *rd)
{
    return pj_strcmp2(&rd->msg_info.msg->line.req.method.name, "REFER") == 0;
}

/* An INVITE that would replace one of our calls (RFC 3891). */
static int rule_replaces(const raw_msg_t *m, pjsip_rx_data *rd)
{
    static const pj_str_t replaces = {"Replaces", 8};
    const pjsip_msg *msg = rd->msg_info.msg;
    return msg->line.req.method.id == PJSIP_INVITE_METHOD &&
           pjsip_msg_find_hdr_by_name(msg, &replaces, NULL) != NULL;
}

typedef struct {
    const char *name;
    int code;           /* the stateless answer */
    const char *reason; /* its reason phrase */
    int (*broken)(const raw_msg_t *, pjsip_rx_data *);
    unsigned long hits;
} screen_rule_t;

/* In order: a malformed request is refused for its syntax before anything
 * is looked up for it. */
static screen_rule_t SCREEN_RULES[] = {
    {"duplicate_header", 400, "Duplicate Single-Value Header", rule_duplicate_header, 0},
    {"request_line", 400, "Malformed Request-Line", rule_request_line_tail, 0},
    {"ruri_headers", 400, "Headers In Request-URI", rule_ruri_headers, 0},
    {"date", 400, "Date Not In GMT", rule_date_gmt, 0},
    {"name_addr", 400, "Malformed From/To", rule_name_addr, 0},
    {"cseq_method", 400, "CSeq Method Mismatch", rule_cseq_method, 0},
    {"content_length", 400, "Content-Length Too Large", rule_content_length, 0},
    {"dialog", 481, "Call/Transaction Does Not Exist", rule_wrong_call_id, 0},
    {"refer", 403, "Transfer Not Allowed", rule_refer, 0},
    {"replaces", 403, "Replaces Not Allowed", rule_replaces, 0},
};
#define N_RULES (sizeof(SCREEN_RULES) / sizeof(SCREEN_RULES[0]))

static pj_bool_t screen_on_rx_request(pjsip_rx_data *rdata)
{
    raw_msg_t m;
    m.text = rdata->msg_info.msg_buf;
    m.len = (size_t)rdata->msg_info.len;
    if (m.text == NULL || m.len < 4)
        return PJ_FALSE;
    const char *eol = NULL, *blank = NULL;
    for (size_t i = 0; i + 1 < m.len; i++)
        if (m.text[i] == '\r' && m.text[i + 1] == '\n') {
            eol = m.text + i;
            break;
        }
    for (size_t i = 0; i + 3 < m.len; i++)
        if (memcmp(m.text + i, "\r\n\r\n", 4) == 0) {
            blank = m.text + i;
            break;
        }
    if (eol == NULL || blank == NULL)
        return PJ_FALSE; /* pjsip's parser has already judged worse */
    m.line = m.text;
    m.line_len = (size_t)(eol - m.text);
    m.hdr_end = (size_t)(blank - m.text);
    for (size_t i = 0; i < N_RULES; i++) {
        if (!SCREEN_RULES[i].broken(&m, rdata))
            continue;
        SCREEN_RULES[i].hits++;
        PJ_LOG(4, ("ponte-screen", "refused %.*s from %s:%d: %s",
                   (int)(m.line_len > 80 ? 80 : m.line_len), m.line, rdata->pkt_info.src_name,
                   rdata->pkt_info.src_port, SCREEN_RULES[i].name));
        if (rdata->msg_info.msg->line.req.method.id != PJSIP_ACK_METHOD) {
            pj_str_t reason = pj_str((char *)SCREEN_RULES[i].reason);
            pjsip_endpt_respond_stateless(pjsua_get_pjsip_endpt(), rdata,
                                          SCREEN_RULES[i].code, &reason, NULL, NULL);
        }
        return PJ_TRUE; /* consumed: no transaction, no dialog, no call */
    }
    return PJ_FALSE;
}

static pjsip_module screen_module = {
    NULL, NULL,                            /* prev, next */
    {"mod-ponte-screen", 16},              /* name */
    -1,                                    /* id */
    PJSIP_MOD_PRIORITY_TSX_LAYER - 1,      /* before transactions are made */
    NULL, NULL, NULL, NULL,                /* load, start, stop, unload */
    &screen_on_rx_request, NULL,           /* on_rx_request, on_rx_response */
    NULL, NULL, NULL,                      /* on_tx_request, on_tx_response, on_tsx_state */
};

/* Remove one value from a capability header (Allow, Supported,
 * Allow-Events): pjsip copies these into its requests and answers. */
static void drop_value(const pjsip_hdr *hdr, const char *value)
{
    pjsip_generic_array_hdr *h = (pjsip_generic_array_hdr *)hdr;
    if (h == NULL)
        return;
    for (unsigned i = 0; i < h->count;) {
        if (pj_stricmp2(&h->values[i], value) == 0) {
            memmove(&h->values[i], &h->values[i + 1], (h->count - i - 1) * sizeof(pj_str_t));
            h->count--;
        } else {
            i++;
        }
    }
}

static PyObject *install_screen(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    (void)mod;
    if (screen_module.id != -1)
        Py_RETURN_FALSE;
    if (!pj_thread_is_registered() || pjsua_get_pjsip_endpt() == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "install_screen needs pjsua's thread, after libInit");
        return NULL;
    }
    pj_status_t st = pjsip_endpt_register_module(pjsua_get_pjsip_endpt(), &screen_module);
    if (st != PJ_SUCCESS) {
        PyErr_Format(PyExc_RuntimeError, "cannot register the SIP screen (status %d)", (int)st);
        return NULL;
    }
    /* Stop advertising what the screen refuses: pjsua's transfer and
     * Replaces modules announced them to every peer. */
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    drop_value(pjsip_endpt_get_capability(endpt, PJSIP_H_ALLOW, NULL), "REFER");
    drop_value(pjsip_endpt_get_capability(endpt, PJSIP_H_SUPPORTED, NULL), "replaces");
    drop_value(pjsip_endpt_get_capability(endpt, PJSIP_H_SUPPORTED, NULL), "norefersub");
    drop_value(pjsip_evsub_get_allow_events_hdr(NULL), "refer");
    Py_RETURN_TRUE;
}

static PyObject *screen_stats(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    (void)mod;
    PyObject *d = PyDict_New();
    for (size_t i = 0; d != NULL && i < N_RULES; i++) {
        PyObject *v = PyLong_FromUnsignedLong(SCREEN_RULES[i].hits);
        if (v == NULL || PyDict_SetItemString(d, SCREEN_RULES[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyMethodDef module_methods[] = {
    {"signal_level", signal_level, METH_O,
     "signal_level(slot) -> (tx, rx): last levels 0-255 (rx: what the member says)."},
    {"set_opus_config", set_opus_config, METH_VARARGS,
     "set_opus_config(rate, bitrate, complexity, cbr): pjmedia's Opus encoder for the\n"
     "legs opened from now on (bitrate 0: libopus chooses)."},
    {"set_talker_gate", set_talker_gate, METH_VARARGS,
     "set_talker_gate(level, hangover_ms): a member quieter than level (mean absolute\n"
     "sample, 0-32767) for longer than hangover_ms is mixed to nobody; level 0: off."},
    {"set_shared_encode", set_shared_encode, METH_O,
     "set_shared_encode(on): listeners who hear the same talkers share one encode (the\n"
     "default); off, every leg encodes its own frames."},
    {"set_jb_discard", set_jb_discard, METH_O,
     "set_jb_discard(algo): the receive jitter buffer's discard algorithm of legs opened\n"
     "from now on: 0 none, 1 static, 2 progressive, -1 pjsua's (progressive)."},
    {"shared_encode_stats", shared_encode_stats, METH_NOARGS,
     "shared_encode_stats() -> {shared: frames sent with a group's payload, encoded: group\n"
     "encodes} (G.711/G.722/Opus listeners who hear the same talkers share one encode)."},
    {"install_screen", install_screen, METH_NOARGS,
     "install_screen() -> bool: refuse RFC 4475 invalid requests (400), a request with a\n"
     "call's To tag and another Call-ID (481), REFER and Replaces (403); once per process."},
    {"screen_stats", screen_stats, METH_NOARGS,
     "screen_stats() -> {rule: requests refused (or ACKs dropped)}."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef pjx_module = {
    PyModuleDef_HEAD_INIT, "pbx._pjx",
    "ponte's pjproject extensions: a Python-fed media port and a SIP screen.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pjx(void)
{
    if (PyType_Ready(&MediaPortType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&pjx_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&MediaPortType);
    if (PyModule_AddObject(m, "MediaPort", (PyObject *)&MediaPortType) < 0) {
        Py_DECREF(&MediaPortType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
