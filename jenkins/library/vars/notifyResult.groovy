/*
 * notifyResult: announces the result of the running build, from a post { always { } } block.
 *
 * The notification of record is `make notify` (xgbops.notify: an email with the key figures of
 * the summary files, plus a desktop bubble where one exists). When that command fails, because
 * the workspace is broken or the SMTP server refused the mail, email-ext sends a short mail
 * with the build log attached, so a result is never lost silently.
 *
 * Loaded by the pipelines with `@Library('xgbops') _` (jenkins/casc/unclassified.yaml).
 */

/**
 * Sends the notification of the current build.
 *
 * @param summaries JSON reports whose key figures go into the mail (missing ones are skipped)
 */
void call(List<String> summaries = []) {
    String status = currentBuild.currentResult
    long seconds = (System.currentTimeMillis() - currentBuild.startTimeInMillis).intdiv(1000)
    List<String> arguments = [
        '--job', env.JOB_NAME, '--status', status, '--duration', "${seconds}", '--url', env.BUILD_URL,
    ]
    List<String> present = []
    // Plain loops: steps (fileExists) inside closures given to collection methods are not
    // reliably supported by Pipeline's CPS interpreter.
    for (String path in summaries) {
        if (fileExists(path)) {
            present.add(path)
            arguments.addAll(['--summary', path])
        }
    }
    try {
        withCredentials([usernamePassword(credentialsId: 'smtp',
                usernameVariable: 'XGBOPS_NOTIFY__SMTP_USER',
                passwordVariable: 'XGBOPS_NOTIFY__SMTP_PASSWORD')]) {  // pragma: allowlist secret
            // make reads NOTIFY_ARGS from the environment: no value passes through Groovy strings
            // into the shell command line.
            withEnv(["NOTIFY_ARGS=${shellWords(arguments)}"]) {
                sh 'make notify'
            }
        }
    // Any failure of the command (exit status, missing credentials, abort) falls back to email-ext.
    // groovylint-disable-next-line CatchException
    } catch (Exception failure) {
        echo "make notify failed (${failure.message}); sending the result with email-ext instead"
        emailext(
            to: '$DEFAULT_RECIPIENTS',
            subject: "[xgbops] ${env.JOB_NAME} #${env.BUILD_NUMBER}: ${status} in ${seconds}s",
            body: """${env.JOB_NAME} #${env.BUILD_NUMBER} finished: ${status} after ${seconds}s.
Build: ${env.BUILD_URL}

`make notify` could not send the full report (${failure.message}); the build log is attached.
""",
            attachmentsPattern: present.join(','),
            attachLog: true,
            compressLog: true,
        )
    }
}

/**
 * Quotes words for the POSIX shell that runs make's recipe.
 *
 * @param words the arguments
 * @return one string, each word single-quoted
 */
@NonCPS
String shellWords(List<String> words) {
    return words.collect { String word -> "'" + word.replace("'", "'\\''") + "'" }.join(' ')
}
