# The deterministic simulator's checks (simulations/): determinism and failure reporting, and
# the seed sweep: every scenario of simulations/scenarios/ over many seeds, all invariants
# checked after each run. 64 seeds of each of eight scenarios (512 runs) in the release build;
# 6 each under the sanitizers, which are several times slower. laptop-week (a simulated week,
# about 25 s a run) runs one seed, release only. `cmake --build build --target sim-check`
# runs the same sweep; simulations/soak.sh is the long one.
if(TARGET barrel-sim)
  set(_sim $<TARGET_FILE:barrel-sim>)
  set(_scn ${CMAKE_SOURCE_DIR}/simulations/scenarios)
  add_test(NAME sim/determinism COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/sim/determinism.sh ${_sim} ${_scn})
  if(BARREL_SANITIZE)
    set(_seeds 1-6)
  else()
    set(_seeds 1-64)
  endif()
  set(_sweep chain full-mesh mesh star-filtered partition-heal churn crash-storm skew)
  foreach(s ${_sweep})
    add_test(NAME sim/seeds-${s} COMMAND ${_sim} ${_scn}/${s}.scn --seeds ${_seeds} --quiet)
    set_tests_properties(sim/seeds-${s} PROPERTIES TIMEOUT 600)
  endforeach()
  if(NOT BARREL_SANITIZE)
    add_test(NAME sim/laptop-week COMMAND ${_sim} ${_scn}/laptop-week.scn --seed 1)
    set_tests_properties(sim/laptop-week PROPERTIES TIMEOUT 600)
  endif()
  set(_cmds)
  foreach(s ${_sweep})
    list(APPEND _cmds COMMAND ${_sim} ${_scn}/${s}.scn --seeds 1-64 --quiet)
  endforeach()
  add_custom_target(sim-check ${_cmds} DEPENDS barrel-sim USES_TERMINAL
    COMMENT "barrel-sim: 512 seeded runs over the scenarios")
endif()
