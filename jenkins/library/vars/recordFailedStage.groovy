/*
 * recordFailedStage: names the running stage as the failed one, from that stage's
 * post { failure { } } block, so that notifyResult can say where the build broke.
 *
 * Declarative runs a stage's post inside the stage, where STAGE_NAME is set; env.FAILED_STAGE
 * then lives until the end of the build. Parallel stages that fail together are all named.
 *
 * Loaded by the pipelines with `@Library('xgbops') _` (jenkins/casc/unclassified.yaml).
 */

/**
 * Adds the running stage to env.FAILED_STAGE.
 */
void call() {
    String stage = env.STAGE_NAME
    env.FAILED_STAGE = env.FAILED_STAGE ? "${env.FAILED_STAGE}, ${stage}" : stage
}
