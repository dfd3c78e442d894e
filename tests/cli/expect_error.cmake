# Runs LCKV with ARGS (a ;-list) and checks: exit code 2, stderr one line
# "lckv: error: ..." matching EXPECTED.
execute_process(COMMAND ${LCKV} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "expected exit code 2, got ${rc}\nstdout: ${out}\nstderr: ${err}")
endif()
string(STRIP "${err}" line)
if(line MATCHES "\n")
  message(FATAL_ERROR "expected one line on stderr, got:\n${err}")
endif()
if(NOT line MATCHES "^lckv: error: .*${EXPECTED}")
  message(FATAL_ERROR "stderr does not match \"${EXPECTED}\":\n${err}")
endif()
message(STATUS "ok: ${line}")
