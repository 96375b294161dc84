# Test registration for ctest; included from the top CMakeLists.txt.
#  spec/unit/test_*.c   C unit tests, one executable per subsystem (spec/unit/zt.h)
#  spec/lua/*_spec.lua  Lua specs, run by the real binary: `zhost run spec/lua/x_spec.lua`
#  spec/e2e/test_*.py, spec/sql/test_*.py, spec/fakes/test_*.py
#                       end-to-end tests (Python 3 stdlib unittest) against the real binary,
#                       a real ClickHouse (ZHOST_TEST_CH_URL) and the fake APIs in spec/fakes.
find_program(PYTHON3 NAMES python3 REQUIRED)

file(GLOB ZH_UNIT_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/unit/test_*.c)
foreach(src ${ZH_UNIT_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE zhostcore)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/spec/unit)
  add_test(NAME unit_${name} COMMAND ${name} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(unit_${name} PROPERTIES TIMEOUT 120 LABELS unit)
endforeach()

set(ZH_TEST_ENV
  "ZHOST_BIN=$<TARGET_FILE:zhost>"
  "ZHOST_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
  "ZHOST_BUILD_DIR=${CMAKE_BINARY_DIR}")

file(GLOB ZH_LUA_SPECS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/lua/*_spec.lua)
foreach(spec ${ZH_LUA_SPECS})
  get_filename_component(name ${spec} NAME_WE)
  add_test(NAME lua_${name} COMMAND zhost run ${spec} --job spec_${name} --dry-run
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  # Specs live outside scripts/: require() finds the shared helpers through ZHOST_LUA_PATH.
  set_tests_properties(lua_${name} PROPERTIES TIMEOUT 120 LABELS lua
                       ENVIRONMENT "${ZH_TEST_ENV};ZHOST_LUA_PATH=${CMAKE_SOURCE_DIR}/scripts/lib")
endforeach()

file(GLOB ZH_PY_TESTS CONFIGURE_DEPENDS
  ${CMAKE_SOURCE_DIR}/spec/e2e/test_*.py
  ${CMAKE_SOURCE_DIR}/spec/sql/test_*.py
  ${CMAKE_SOURCE_DIR}/spec/fakes/test_*.py)
foreach(py ${ZH_PY_TESTS})
  get_filename_component(name ${py} NAME_WE)
  get_filename_component(dir ${py} DIRECTORY)
  get_filename_component(group ${dir} NAME)
  add_test(NAME ${group}_${name} COMMAND ${PYTHON3} -m unittest -v ${name}
           WORKING_DIRECTORY ${dir})
  set_tests_properties(${group}_${name} PROPERTIES TIMEOUT 900 LABELS ${group} ENVIRONMENT "${ZH_TEST_ENV}")
endforeach()
