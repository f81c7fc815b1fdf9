/*
 * notifyResult: mails the result of the running build, from a post { always { } } block.
 *
 * Jenkins' own email-ext sends the mail (server, login and recipients: jenkins/casc), so no job
 * builds a Python environment just to announce its result; that took every job about three
 * minutes, even the orchestrator, which runs nothing itself. A build that did not succeed names
 * the stage that failed (recordFailedStage, called from each stage's post { failure { } }) and
 * carries the end of its log, where the error is; the summary reports a pipeline names are
 * included as they are. `make notify` stays the notification of runs outside Jenkins.
 *
 * Loaded by the pipelines with `@Library('xgbops') _` (jenkins/casc/unclassified.yaml).
 */

/**
 * Sends the mail of the current build; the polling baseline build (pollingBaseline) gets none.
 *
 * @param summaries JSON reports whose content goes into the mail (missing ones are skipped)
 */
void call(List<String> summaries = []) {
    if (pollingBaseline()) {
        currentBuild.description = 'Polling baseline: nothing ran; later polls compare with this revision.'
        echo 'First poll of a job that never built: no stage ran, so no mail is sent.'
        return
    }
    String status = currentBuild.currentResult
    long seconds = (System.currentTimeMillis() - currentBuild.startTimeInMillis).intdiv(1000)
    String where = env.FAILED_STAGE ? " at stage ${env.FAILED_STAGE}" : ''
    int logLines = 80
    List<String> body = [
        "${env.JOB_NAME} #${env.BUILD_NUMBER} finished: ${status}${where} after ${seconds}s.",
        "Build: ${env.BUILD_URL}",
    ]
    List<String> present = []
    // Plain loops: steps (fileExists) inside closures given to collection methods are not
    // reliably supported by Pipeline's CPS interpreter.
    for (String path in summaries) {
        if (fileExists(path)) {
            present.add(path)
            // email-ext's FILE token: the file's content, read from the workspace when sending.
            body.addAll(['', "${path}:", "\${FILE, path=\"${path}\"}"])
        }
    }
    if (status != 'SUCCESS') {
        // email-ext's BUILD_LOG token: the last lines of this build's log.
        body.addAll(['', "Last ${logLines} lines of the log:", "\${BUILD_LOG, maxLines=${logLines}}"])
    }
    emailext(
        to: '$DEFAULT_RECIPIENTS',
        subject: "[xgbops] ${env.JOB_NAME} #${env.BUILD_NUMBER}: ${status}${where} (${seconds}s)",
        body: body.join('\n'),
        mimeType: 'text/plain',
        attachmentsPattern: present.join(','),
        // The whole log too, compressed, when something went wrong.
        attachLog: status != 'SUCCESS',
        compressLog: true,
    )
}
