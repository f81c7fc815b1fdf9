/*
 * Job DSL seed, run by configuration as code (jenkins/casc/jobs.yaml) at every start.
 *
 * One "Pipeline script from SCM" job per Jenkinsfile of the repository: each file in
 * pipelines/ plus the orchestrator (the root Jenkinsfile). The table below is the whole
 * contract; tests/platform/test_jenkins.py checks that every entry points at an existing file
 * and that every file in pipelines/ has an entry.
 *
 * Triggers live here rather than in the Jenkinsfiles: a Jenkinsfile's `triggers` directive
 * only registers after the job's first build, a seeded trigger works from the start. A polled
 * job that never built builds at its first poll, commit or not (there is no revision to compare
 * with): the polled Jenkinsfiles run no stage in that build (library step pollingBaseline), which
 * only records the revision later polls compare with.
 *
 * PUBLISH, the switch without which nothing publishes an image, is declared here too: a
 * Jenkinsfile's `parameters` registers only when a build runs, and this seed rewrites the jobs at
 * every start, dropping what builds registered. Declared here, the orchestrator offers it from
 * the start and the publish job always accepts the value the orchestrator passes on.
 *
 * The rollout job's parameters are declared here for the same reason: it is started by hand or
 * through the API/CLI (`buildWithParameters`, `build rollout -p VERSION=7`), and Jenkins drops
 * the parameters a job does not declare. A build that registered them would lose them at the
 * next restart. rolloutParameters below mirrors pipelines/rollout.Jenkinsfile: name, type,
 * default and choices (tests/platform/test_jenkins.py compares the two).
 *
 * XGBOPS_GIT_URL and XGBOPS_GIT_BRANCH come from `providedEnv` in jobs.yaml.
 */

final String gitUrl = XGBOPS_GIT_URL
final String gitBranch = XGBOPS_GIT_BRANCH
final String publishHelp = 'Build, smoke-test and push the API image (off: nothing is published).'
// [type, name, default (choices: the list, the first is the default), help]
final List<List<Object>> rolloutParameters = [
    ['string', 'VERSION', '', 'Registry version of the challenger (required), e.g. 7.'],
    ['choice', 'MODE', ['canary', 'shadow', 'ab'], 'canary, shadow or ab (A/B).'],
    ['string', 'SHARE', '10', 'Percent of the live traffic for the challenger (1-100).'],
    ['boolean', 'RAMP', false, 'canary only: one more traffic step after every STEP_MINUTES.'],
    ['string', 'STEP_MINUTES', '15', 'With RAMP: minutes at each traffic step.'],
    ['string', 'EVIDENCE_MINUTES', '60', 'Minutes to wait for a decision (then: roll back).'],
    ['string', 'POLL_SECONDS', '60', 'Seconds between two reads of the live comparison.'],
    ['boolean', 'AUTO_PROMOTE', false, 'Promote without asking a person.'],
]

final List<Map<String, String>> pipelineJobs = [
    // No trigger of its own: every commit starts the orchestrator, which builds this job first
    // (polling here too would run the checks twice per commit).
    [name: 'quality', scriptPath: 'pipelines/quality.Jenkinsfile',
     description: 'Code quality: format, lint, types, security, tests, SonarQube quality gate.'],
    [name: 'data', scriptPath: 'pipelines/data.Jenkinsfile',
     description: 'Data checks of the dataset; runs when data/ or config/ changes.',
     poll: 'H/5 * * * *', onlyPaths: 'data/.*\nconfig/.*'],
    [name: 'training', scriptPath: 'pipelines/training.Jenkinsfile',
     description: 'Train, evaluate on the holdout, promote the champion if it is better.'],
    [name: 'publish', scriptPath: 'pipelines/publish.Jenkinsfile',
     description: 'Build the API image with the champion, smoke-test it, push it to Docker Hub.',
     askPublish: 'true'],
    [name: 'monitoring', scriptPath: 'pipelines/monitoring.Jenkinsfile',
     description: 'System sample, drift of recent predictions, sync to the monitoring sink.',
     cron: 'H/30 * * * *'],
    // No trigger: started by hand or through the API/CLI, with the challenger's version.
    [name: 'rollout', scriptPath: 'pipelines/rollout.Jenkinsfile',
     description: 'A challenger beside the champion on live traffic, then promoted or rolled back.',
     askRollout: 'true'],
    [name: 'orchestrator', scriptPath: 'Jenkinsfile',
     description: 'The whole chain: quality, data, training, and publish when PUBLISH is ticked.',
     poll: 'H/5 * * * *', askPublish: 'true'],
]

pipelineJobs.each { Map<String, String> entry ->
    pipelineJob(entry.name) {
        description(entry.description)
        if (entry.askPublish) {
            parameters {
                booleanParam('PUBLISH', false, publishHelp)
            }
        }
        if (entry.askRollout) {
            parameters {
                for (List<Object> parameter in rolloutParameters) {
                    String type = parameter[0]
                    if (type == 'choice') {
                        choiceParam(parameter[1], parameter[2], parameter[3])
                    } else if (type == 'boolean') {
                        booleanParam(parameter[1], parameter[2], parameter[3])
                    } else {
                        stringParam(parameter[1], parameter[2], parameter[3])
                    }
                }
            }
        }
        properties {
            pipelineTriggers {
                triggers {
                    if (entry.poll) {
                        pollSCM {
                            scmpoll_spec(entry.poll)
                        }
                    }
                    if (entry.cron) {
                        cron {
                            spec(entry.cron)
                        }
                    }
                }
            }
        }
        definition {
            cpsScm {
                scm {
                    git {
                        remote {
                            url(gitUrl)
                        }
                        branch("*/${gitBranch}")
                        if (entry.onlyPaths) {
                            extensions {
                                // Polling builds only for commits touching these paths.
                                pathRestriction {
                                    includedRegions(entry.onlyPaths)
                                    excludedRegions('')
                                }
                            }
                        }
                    }
                }
                scriptPath(entry.scriptPath)
                lightweight(true)
            }
        }
    }
}
