# Configures, builds and runs tests/consumer/project against lckv in MODE.
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer (${MODE}): `${ARGN}` failed (${rc}):\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK})
set(project_args -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release -DCONSUMER_MODE=${MODE})
if(MODE STREQUAL "find_package")
  # Install lckv alone (no tests, examples or benchmarks) into a fresh prefix.
  step(${CMAKE_COMMAND} -S ${LCKV_SOURCE} -B ${WORK}/lckv-build -G ${GENERATOR}
       -DLCKV_BUILD_TESTS=OFF -DLCKV_BUILD_EXAMPLES=OFF -DLCKV_BUILD_BENCHMARKS=OFF
       -DCMAKE_INSTALL_PREFIX=${WORK}/prefix)
  step(${CMAKE_COMMAND} --install ${WORK}/lckv-build)
  list(APPEND project_args -DCMAKE_PREFIX_PATH=${WORK}/prefix)
else()
  list(APPEND project_args -DLCKV_SOURCE=${LCKV_SOURCE})
endif()
step(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/project -B ${WORK}/project-build ${project_args})
step(${CMAKE_COMMAND} --build ${WORK}/project-build)
step(${WORK}/project-build/consumer)
message(STATUS "consumer (${MODE}): built and ran")
