/*
 * pollingBaseline: whether the running build is the one Jenkins starts at the first poll of a job
 * that has never built.
 *
 * SCM polling compares the repository with the revision the job's last build checked out. A
 * Pipeline job without a build has nothing to compare with, so its first poll builds at once
 * (WorkflowJob.poll: "no previous build to compare to", BUILD_NOW): on Jenkins' first start every
 * polled job would run without a commit, the orchestrator the whole chain. The polled Jenkinsfiles
 * skip their stages in that build, so it only records the revision later polls compare with (the
 * declarative checkout before the first stage: do not add skipDefaultCheckout), and notifyResult
 * sends no mail for it. A first build started by hand or by another job runs as usual.
 *
 * Loaded by the pipelines with `@Library('xgbops') _` (jenkins/casc/unclassified.yaml).
 */

/**
 * Tells the polling baseline build apart from every other build.
 *
 * @return true when SCM polling started the job's first build
 */
boolean call() {
    return currentBuild.previousBuild == null &&
        !currentBuild.getBuildCauses('hudson.triggers.SCMTrigger$SCMTriggerCause').isEmpty()
}
