# cmake --install: headers, libtorchqat and a torchqatConfig.cmake for find_package(torchqat).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS torchqat EXPORT torchqatTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/torchqat DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT torchqatTargets NAMESPACE torchqat:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/torchqat)
configure_package_config_file(cmake/torchqatConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/torchqatConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/torchqat)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/torchqatConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/torchqatConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/torchqatConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/torchqat)
