// Boost.JSON is used header-only by the HTTP door; its implementation is
// compiled once, here.
#include <boost/json/src.hpp>
