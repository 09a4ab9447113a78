/* gather_direct.c - placeholder until the algorithm lands: declines every call. */
#include "algo.h"

rc_status_t rc_gather_direct(rc_comm_t *c, const rc_task_t *t) {
    (void)t;
    return rc_set_error(RC_ERR_NOT_SUPPORTED, "rank %d: gather_direct is not implemented yet", c->rank);
}
