/* reduce_rs_gather.c - placeholder until the algorithm lands: declines every call. */
#include "algo.h"

rc_status_t rc_reduce_rs_gather(rc_comm_t *c, const rc_task_t *t) {
    (void)t;
    return rc_set_error(RC_ERR_NOT_SUPPORTED, "rank %d: reduce_rs_gather is not implemented yet", c->rank);
}
