# lckv convert turns a plain Llama fixture into an LCKV checkpoint (pure top:
# only the last layer keeps k/v), and the result loads and scores a text.
file(REMOVE_RECURSE ${OUT})
execute_process(COMMAND ${LCKV} convert --from ${SOURCE} --variant pure-top --out ${OUT} RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "convert failed (${rc}): ${out}${err}")
endif()
file(READ ${OUT}/config.json config)
if(NOT config MATCHES "\"model_type\": \"lckv-llama\"" OR NOT config MATCHES "\"layer_types\": \"1_1\"")
  message(FATAL_ERROR "converted config.json is not the pure-top lckv-llama model:\n${config}")
endif()
execute_process(COMMAND ${LCKV} perplexity --model ${OUT} --tokens ${TOKENS} RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "perplexity [0-9]")
  message(FATAL_ERROR "perplexity on the converted model failed (${rc}): ${out}${err}")
endif()
message(STATUS "ok: ${out}")
