// batch_norm.cu — the BatchNorm pieces that GroupNorm does not already provide.
//
// BatchNorm over x [rows = N*D*H*W, C] is group_norm.cu's kernels with N = 1, G = C:
//   training forward: gn_stats_partial_v* -> gn_stats_finalize (mean, rstd, var) ->
//                     bn_update_running -> gn_apply_v*
//   eval forward:     bn_eval_stats -> gn_apply_v*
//   training backward: gn_bwd_partial_v* -> gn_bwd_finalize -> gn_bwd_dx_v*
//   eval backward:     gn_bwd_partial_v* -> gn_bwd_finalize (for dgamma/dbeta) -> gn_bwd_dx_v*, coef = null
// Running statistics follow torch: biased variance normalises, the unbiased one (count/(count-1))
// enters running_var; running = (1 - momentum) * running + momentum * batch.
#include "medvae_common.cuh"

// mean = running_mean, rstd = 1/sqrt(running_var + eps), for eval-mode normalisation.
extern "C" __global__ void bn_eval_stats(const float* __restrict__ running_mean, const float* __restrict__ running_var,
                                         float eps, int C, float* __restrict__ mean, float* __restrict__ rstd) {
    for (mv_i64 c = mv_global_tid(); c < C; c += mv_global_stride()) {
        mean[c] = running_mean[c];
        rstd[c] = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
    }
}

// Running-statistics update from the batch mean and biased variance over `count` rows.
extern "C" __global__ void bn_update_running(const float* __restrict__ mean, const float* __restrict__ var,
                                             mv_i64 count, float momentum, int C, float* running_mean,
                                             float* running_var) {
    const float unbias = count > 1 ? (float)((double)count / (double)(count - 1)) : 1.0f;
    for (mv_i64 c = mv_global_tid(); c < C; c += mv_global_stride()) {
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean[c];
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * var[c] * unbias;
    }
}
