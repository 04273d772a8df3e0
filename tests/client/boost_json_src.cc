// Boost.JSON is used header-only by the CLI and load-generator tests; its
// implementation is compiled once, here.
#include <boost/json/src.hpp>
