# Included from tests/CMakeLists.txt. disc_probe: the small program that discovery_test starts
# (inside network namespaces, each with its own Avahi daemon) to publish and browse; it prints
# one line per event. Not a test by itself.
add_executable(disc_probe ${CMAKE_CURRENT_LIST_DIR}/disc_probe.c)
target_compile_options(disc_probe PRIVATE ${BARREL_WARNINGS})
target_link_libraries(disc_probe PRIVATE barrel_discovery)
if(TARGET test_discovery_discovery_test)
  add_dependencies(test_discovery_discovery_test disc_probe)
  target_compile_definitions(test_discovery_discovery_test PRIVATE
    DISC_PROBE="$<TARGET_FILE:disc_probe>"
    NETNS_SH="${CMAKE_CURRENT_LIST_DIR}/../netns/netns.sh")
endif()
