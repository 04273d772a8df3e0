# Embeds a text file in C++ as a std::string_view constant (a raw string
# literal), so a binary serves it without reading files at run time.
#   cmake -DINPUT=page.html -DOUTPUT=page_html.h -DNAME=kPageHtml -P embed_text.cmake
# The header is rewritten only when its contents change.
set(delimiter "tally_embed")  # at most 16 characters
file(READ "${INPUT}" content)
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw string delimiter )${delimiter}\"")
endif()
set(header "// Generated from ${INPUT} by cmake/embed_text.cmake; do not edit.\n")
string(APPEND header "#pragma once\n#include <string_view>\n")
string(APPEND header "inline constexpr std::string_view ${NAME} = R\"${delimiter}(")
string(APPEND header "${content}")
string(APPEND header ")${delimiter}\";\n")
file(WRITE "${OUTPUT}.tmp" "${header}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
