/* p2p.h - the point-to-point engine: tagged send/recv streamed in chunks
 * over the transport's point-to-point lane.  Only the executor (see
 * progress.c) calls these; nothing here blocks. */
#ifndef RC_P2P_H
#define RC_P2P_H

#include "core.h"

rc_status_t rc_p2p_init(rc_comm_t *comm);
void rc_p2p_free(rc_comm_t *comm);
/* Start a send or receive request (it may complete at once). */
rc_status_t rc_p2p_post(rc_comm_t *comm, rc_request_t *r);
/* Move whatever can move now: > 0 when something moved, 0 when nothing
 * could, < 0 (an rc_status_t) when the communicator failed. */
int rc_p2p_progress(rc_comm_t *comm);
/* Fail every request in the engine (the communicator failed or closes). */
void rc_p2p_fail_all(rc_comm_t *comm, rc_status_t st);
/* What the oldest pending operation waits for ("recv from rank 1 tag 0 ..."). */
void rc_p2p_describe(rc_comm_t *comm, char *buf, size_t len);

/* The check every arriving point-to-point descriptor passes (also fuzzed). */
rc_status_t rc_p2p_desc_check(const rc_desc_t *d, uint32_t expect_msg, int mid_message,
                              uint64_t cur_bytes, uint64_t cur_off, int cur_tag,
                              size_t chunk_bytes, char *why, size_t len);

#endif
